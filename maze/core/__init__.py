"""Domain logic shared by the head, the API and the SDK: errors, settings, DAG and resource rules."""
