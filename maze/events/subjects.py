"""Stream, subject and bucket names: the JetStream layout in one place."""

RUNS_STREAM = "MAZE_RUNS"
WORK_STREAM = "MAZE_WORK"
NODES_STREAM = "MAZE_NODES"
LOGS_STREAM = "MAZE_LOGS"  # what tasks print (maze/events/logs.py), apart from the lifecycle log
HEARTBEAT_BUCKET = "maze-heartbeats"
CONTROLLER_BUCKET = "maze-controller"  # KV: which blob holds the controller's latest snapshot
LEADER_BUCKET = "maze-leader"  # KV: the run controller's lease (which head decides, and its epoch)
LEADER_RUN_ID = "_leader"  # never a run's id (those start with "run_"): leadership in the runs stream
BLOB_BUCKET = "maze-artifacts"  # JetStream Object Store: code and large values by sha256
BLOB_STREAM = f"OBJ_{BLOB_BUCKET}"
# KV: each workspace's files for people (maze/events/workspace_files.py), their content in the blob store
WORKSPACE_BUCKET = "maze-workspaces"
# KV: the workflow builder's saved graphs, by name (maze/events/saved_workflows.py)
WORKFLOW_BUCKET = "maze-workflows"

RUN_SUBJECTS = "maze.run.>"
WORK_SUBJECTS = "maze.work.>"
WORK_PREFIX = "maze.work."  # (the work stream, kept in memory)
NODE_SUBJECTS = "maze.node.>"
LOG_SUBJECTS = "maze.log.>"


def run_subject(run_id: str) -> str:
    """Where the head writes a run's events (its commands and its controller's decisions)."""
    return f"maze.run.{run_id}"


def report_subject(run_id: str, node_id: str) -> str:
    """Where the worker of node `node_id` writes its reports on a run's attempts: beside the head's
    subject, in the same stream (so in order with it), but its own, so that NATS permissions let
    a worker write there and nowhere else (it cannot create runs or decide for the controller)."""
    return f"maze.run.{run_id}.{node_id}"


def run_filters(run_id: str) -> list[str]:
    """Every subject a run's events are on: the head's and its workers'."""
    return [run_subject(run_id), f"{run_subject(run_id)}.*"]


def reporter_of(subject: str) -> str | None:
    """The node whose worker wrote on this subject; None for the head's own. A worker writes on
    `maze.run.<run>.<node>` (its reports) and `maze.node.<node>` (its sessions); the head on
    `maze.run.<run>` and `maze.node.<node>.head` (what it decides about the node)."""
    parts = subject.split(".", 3)  # a node's id may hold dots: the rest after the run is its id
    if len(parts) < 3 or parts[0] != "maze":
        return None
    if parts[1] == "run":
        return parts[3] or None if len(parts) == 4 else None
    if parts[1] == "node":
        return parts[2] if len(parts) == 3 else None
    return None


def run_of(subject: str) -> str | None:
    """The run a runs-stream subject is of (`maze.run.<run>` and `maze.run.<run>.<node>`); None for
    any other subject."""
    parts = subject.split(".", 3)
    return parts[2] if len(parts) >= 3 and parts[0] == "maze" and parts[1] == "run" else None


LEADER_SUBJECT = f"maze.run.{LEADER_RUN_ID}"  # `leader.elected`, ordered with every run's events
# `leader.elected` again, ordered with the nodes' events (a head subject: no worker may write it),
# so that the folds of the nodes stream refuse a deposed leader's late node.lost alike
NODES_LEADER_SUBJECT = f"maze.node.{LEADER_RUN_ID}.head"


def work_subject(node_id: str) -> str:
    return f"maze.work.{node_id}"


def node_subject(node_id: str) -> str:
    """Where the worker of node `node_id` records its sessions (joined, left)."""
    return f"maze.node.{node_id}"


def node_head_subject(node_id: str) -> str:
    """Where the head records what it decided about node `node_id` (a session lost), and so tells
    its worker (the worker may read it, never write it)."""
    return f"maze.node.{node_id}.head"


def worker_inbox(node_id: str) -> str:
    """The inbox prefix of node `node_id`'s worker connections: replies to it land on subjects only
    it may read (a worker may not subscribe to `_INBOX.>`, where other clients' replies go)."""
    return f"_INBOX_{node_id}"


def log_subject(run_id: str, node_id: str, task_id: str) -> str:
    """Where the worker of node `node_id` writes what a task of a run printed. The node is a token
    of the subject, so NATS permissions let a worker write lines as its own node only (and every
    reader takes the node from here, never from the message); the task is one too, so that one
    task's lines are read with a subject filter."""
    return f"maze.log.{run_id}.{node_id}.{task_id}"


def log_filter(run_id: str, task_id: str | None = None) -> str:
    """The subjects of a run's lines (of one task's, with `task_id`), from every node."""
    return f"maze.log.{run_id}.*.{task_id or '*'}"


def log_origin(subject: str) -> tuple[str, str, str] | None:
    """(run, node, task) of a log subject; None for a subject that is not one."""
    parts = subject.split(".")
    if len(parts) != 5 or parts[0] != "maze" or parts[1] != "log":
        return None
    return parts[2], parts[3], parts[4]


def stream_of(subject: str) -> str:
    """The stream a subject is stored in (the subject itself when it is none of Maze's)."""
    if subject.startswith("maze.run."):
        return RUNS_STREAM
    if subject.startswith("maze.work."):
        return WORK_STREAM
    if subject.startswith("maze.node."):
        return NODES_STREAM
    if subject.startswith("maze.log."):
        return LOGS_STREAM
    if subject.startswith(f"$O.{BLOB_BUCKET}."):
        return BLOB_STREAM
    return subject


def run_id_of(subject: str) -> str:
    return subject.split(".", 3)[2]
