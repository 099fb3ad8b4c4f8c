// Asked for once when the head answers 401: the token is kept in this browser's localStorage and
// sent as `Authorization: Bearer` on every call (never in a URL).
import { useState } from "react";
import { setToken } from "../api/client";

export function TokenPrompt({ refused, onDone }: { refused: boolean; onDone: () => void }) {
  const [value, setValue] = useState("");
  return (
    <div className="modal-backdrop">
      <form
        className="modal"
        onSubmit={(e) => {
          e.preventDefault();
          if (!value.trim()) return;
          setToken(value.trim());
          onDone();
        }}
      >
        <h2>This Maze head requires its API token</h2>
        {refused ? (
          <p className="bad" data-token-refused>
            That token was refused: the head answered 401 to it. Paste the right one.
          </p>
        ) : null}
        <p className="muted">
          Paste the token it printed at its first start (or its
          <code> --token</code> / <code>MAZE_TOKEN</code>; it is in <code>&lt;data-dir&gt;/api-token</code>). It is kept in
          this browser only.
        </p>
        <input
          autoFocus
          type="password"
          name="token"
          aria-label="API token"
          placeholder="API token"
          value={value}
          onChange={(e) => setValue(e.target.value)}
        />
        <button type="submit" className="primary">Use token</button>
      </form>
    </div>
  );
}
