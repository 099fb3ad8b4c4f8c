"""Header names used on every JetStream message Maze publishes."""

MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
EVENT_TYPES = "Maze-Event-Types"  # comma-separated tags, so a reader can skip what it does not know
SCHEMA_VERSION = "Maze-Schema"
SCHEMA = "1"
