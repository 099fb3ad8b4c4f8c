"""How you ask: the Litestar REST + SSE API. Commands append events; queries read projections."""
