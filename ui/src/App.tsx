import { useEffect, useState } from "react";
import { NavLink, Route, Routes, useLocation } from "react-router-dom";
import { getToken, onUnauthorized } from "./api/client";
import { ErrorBoundary } from "./components/ErrorBoundary";
import { TokenPrompt } from "./components/TokenPrompt";
import { BuilderPage } from "./pages/BuilderPage";
import { FilesPage } from "./pages/FilesPage";
import { ClusterPage } from "./pages/ClusterPage";
import { RunPage } from "./pages/RunPage";
import { RunsPage } from "./pages/RunsPage";

export function App() {
  // null: not asked; "missing": a 401 with no token; "refused": a 401 although a token was sent
  const [askToken, setAskToken] = useState<null | "missing" | "refused">(null);
  const { pathname } = useLocation();
  useEffect(() => onUnauthorized(() => setAskToken(getToken() ? "refused" : "missing")), []);
  return (
    <div className="app">
      <header className="topbar">
        <span className="brand">◆ Maze</span>
        <nav>
          <NavLink to="/" end>Runs</NavLink>
          <NavLink to="/cluster">Cluster</NavLink>
          <NavLink to="/builder">Builder</NavLink>
          <NavLink to="/files">Files</NavLink>
        </nav>
        <div className="spacer" />
        <a className="muted" href="/schema" target="_blank" rel="noreferrer">API docs</a>
      </header>
      <main>
        <ErrorBoundary key={pathname /* another page starts afresh */}>
        <Routes>
          <Route path="/" element={<RunsPage />} />
          <Route path="/runs/:runId" element={<RunPage />} />
          <Route path="/cluster" element={<ClusterPage />} />
          <Route path="/builder" element={<BuilderPage />} />
          <Route path="/files" element={<FilesPage />} />
          <Route path="*" element={<div className="page"><h1>Not found</h1></div>} />
        </Routes>
        </ErrorBoundary>
      </main>
      {askToken ? <TokenPrompt refused={askToken === "refused"} onDone={() => window.location.reload()} /> : null}
    </div>
  );
}
