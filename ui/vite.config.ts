import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";
import { fileURLToPath } from "node:url";

// The bundle is written into the Python package and committed (maze/api/playground.py serves it).
export default defineConfig({
  base: "/playground/",
  plugins: [react()],
  build: {
    outDir: fileURLToPath(new URL("../maze/api/static/playground", import.meta.url)),
    emptyOutDir: true,
    chunkSizeWarningLimit: 1200,
  },
  test: { environment: "node", include: ["src/**/*.test.ts"] },
});
