from maze.sdk.cli import main

main()
