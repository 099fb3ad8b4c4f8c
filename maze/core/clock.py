"""Wall-clock time for event timestamps (UTC milliseconds). Folds never call this."""

import time
import uuid


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"
