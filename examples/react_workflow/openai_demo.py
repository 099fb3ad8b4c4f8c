"""A ReAct agent whose decisions come from an OpenAI-compatible model, its tools Maze tasks.

    export MAZE_LLM_BASE_URL=https://api.openai.com/v1   # or http://localhost:8001 (vLLM, Ollama, ...)
    export MAZE_LLM_MODEL=gpt-4o-mini
    export MAZE_LLM_API_KEY_ENV=OPENAI_API_KEY            # the NAME of the variable holding the key
    export OPENAI_API_KEY=sk-...                          # where the workers start (the head's own
                                                          # worker: the shell of `maze start --head`)
    maze start --head --port 8000 &
    python examples/react_workflow/openai_demo.py "Use the tools to compute (18 * 7) + 4."

Each decision is a Maze task that calls `{base URL}/v1/chat/completions` on a worker, reading the
key there from the variable MAZE_LLM_API_KEY_ENV names (leave it unset for a server without
keys); each tool call is a task too. `maze runs trace <run_id>` shows the agent's steps.
"""

from __future__ import annotations

import argparse
import os
import sys

from maze import MaClient, MazeError, openai_llm_task, task

REQUIRED = {
    "MAZE_LLM_BASE_URL": "the server's URL, e.g. https://api.openai.com/v1",
    "MAZE_LLM_MODEL": "the model's name, e.g. gpt-4o-mini",
}


@task(resources={"cpu": 0.1})
def multiply(a: float, b: float) -> dict[str, float]:
    """Multiply two numbers.

    Args:
        a: the first factor
        b: the second factor
    """
    return {"result": a * b}


@task(resources={"cpu": 0.1})
def add(a: float, b: float) -> dict[str, float]:
    """Add two numbers.

    Args:
        a: the first term
        b: the second term
    """
    return {"result": a + b}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A ReAct agent on Maze with an OpenAI-compatible model. Reads MAZE_LLM_BASE_URL, "
        "MAZE_LLM_MODEL and (optional) MAZE_LLM_API_KEY_ENV, the name of the variable that holds the "
        "API key on the workers."
    )
    parser.add_argument("prompt", nargs="?", default="Use the tools to compute (18 * 7) + 4, then answer.")
    parser.add_argument("--server-url", default=os.environ.get("MAZE_SERVER_URL", "http://localhost:8000"))
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--task-timeout", type=float, default=120.0, help="seconds each task may take")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        sys.exit("openai_demo: set " + "; ".join(f"{name} ({REQUIRED[name]})" for name in missing))
    key_env = os.environ.get("MAZE_LLM_API_KEY_ENV") or None
    if key_env and not os.environ.get(key_env):
        print(f"openai_demo: note: ${key_env} is not set here; the workers must have it", file=sys.stderr)
    try:
        answer = run_agent(args, key_env)
    except MazeError as exc:  # a bad setting, a head that does not answer, a failed run: one line
        sys.exit(f"openai_demo: {exc.message}")
    print(answer)


def run_agent(args: argparse.Namespace, key_env: str | None) -> object:
    decide = openai_llm_task(
        base_url=os.environ["MAZE_LLM_BASE_URL"],
        model=os.environ["MAZE_LLM_MODEL"],
        api_key_env=key_env,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
    )
    client = MaClient(args.server_url)
    react = client.create_react_workflow(
        llm_task=decide,
        tools=[multiply, add],
        max_steps=args.max_steps,
        task_timeout=args.task_timeout,
        max_tokens=args.max_tokens,
    )
    return react.run(args.prompt)


if __name__ == "__main__":
    main()
