// Placeholder: the workflow builder (issue 17 item 5) comes next, on this app's API client, SSE
// hook and DAG component.
export function BuilderPage() {
  return (
    <div className="page">
      <h1>Builder</h1>
      <div className="panel placeholder" data-placeholder="builder">
        The workflow builder (drag tasks onto a canvas, connect them, run and watch) is not built yet: it comes
        next. Until then, submit workflows with the Python SDK or <code>maze run</code>, and follow them in Runs.
      </div>
    </div>
  );
}
