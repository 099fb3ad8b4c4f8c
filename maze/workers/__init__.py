"""Who does the work: workers pull placed attempts and run each in its own OS process."""
