// A page that throws while rendering (an answer of a shape it did not expect) shows what went
// wrong and a way back, never a blank app: the top bar stays, another page still opens.
import { Component, type ReactNode } from "react";

interface State {
  error: Error | null;
}

export class ErrorBoundary extends Component<{ children: ReactNode }, State> {
  state: State = { error: null };

  static getDerivedStateFromError(error: Error): State {
    return { error };
  }

  componentDidCatch(error: Error, info: { componentStack?: string | null }) {
    console.error("the page failed to render", error, info.componentStack);
  }

  render() {
    const { error } = this.state;
    if (!error) return this.props.children;
    return (
      <div className="page">
        <div className="panel crash" role="alert" data-crash>
          <h2>This page failed to render</h2>
          <div className="error-box">
            <b>{error.name}</b>: {error.message}
          </div>
          <p className="muted">Only this page failed: the head and its runs are not affected. Reload to try again, or open another page above.</p>
          <button className="primary" onClick={() => window.location.reload()}>Reload</button>
          {error.stack ? (
            <details>
              <summary>details</summary>
              <pre className="traceback">{error.stack}</pre>
            </details>
          ) : null}
        </div>
      </div>
    );
  }
}
