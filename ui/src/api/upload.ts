// Uploads with progress: fetch() cannot report how much of a body was sent, XMLHttpRequest can.
// The token goes in the Authorization header like every other call; a refusal comes back as the
// same ApiError (the head's envelope) the rest of the client throws.
import { ApiError, authHeaders, errorOf } from "./client";

export interface WorkspaceFile {
  path: string;
  sha256: string;
  size: number;
  modified_ms: number;
  content_type: string;
}

/** The URL of a workspace file route, each path segment percent-encoded (the head decodes once). */
export function workspaceFileUrl(workspace: string, route: "files" | "preview", path: string): string {
  const encoded = path.split("/").map(encodeURIComponent).join("/");
  return `/workspaces/${encodeURIComponent(workspace)}/${route}/${encoded}`;
}

export function uploadWithProgress(
  url: string,
  body: Blob,
  onProgress: (sent: number, total: number) => void,
): Promise<WorkspaceFile> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    for (const [k, v] of Object.entries(authHeaders({ "content-type": "application/octet-stream" }))) {
      xhr.setRequestHeader(k, v);
    }
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : body.size);
    xhr.onerror = () => reject(new ApiError(0, "network_error", "the head did not answer the upload"));
    xhr.onabort = () => reject(new ApiError(0, "aborted", "the upload was cancelled"));
    xhr.onload = async () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(body.size, body.size);
        resolve(JSON.parse(xhr.responseText) as WorkspaceFile);
      } else {
        const resp = new Response(xhr.responseText, { status: xhr.status, statusText: xhr.statusText });
        reject(await errorOf(resp));
      }
    };
    xhr.send(body);
  });
}
