// The files a task left in ./out/ (its artifacts): images shown inline, the others as links
// that download them. Each is fetched with the token (the artifact route needs it, so a plain
// <img src> or <a href> cannot load it) and given to the page as a blob: URL.
import { failure, request } from "./api.js";

// Shown inline; anything else (SVG and HTML included: they could run script) is a download.
const INLINE_IMAGES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);

export const byteSize = (bytes) =>
  bytes < 1024
    ? `${bytes} B`
    : bytes < 1048576
      ? `${(bytes / 1024).toFixed(1)} KiB`
      : `${(bytes / 1048576).toFixed(1)} MiB`;

async function fetchBlob(url, signal) {
  const response = await request("GET", url, { signal });
  if (!response.ok) throw await failure(response);
  return response.blob();
}

function artifactUrl(taskId, artifact) {
  if (artifact.url) return artifact.url;
  const name = artifact.name.split("/").map(encodeURIComponent).join("/");
  return `/result/${taskId}/artifacts/${name}`;
}

export class FilesOut {
  // box: shown when there is anything; note: says some were left out; images, downloads: where
  // they go; onError(message): a download that failed.
  constructor({ box, note, images, downloads, onError }) {
    Object.assign(this, { box, note, images, downloads, onError });
    this.blobUrls = [];
  }

  clear() {
    for (const url of this.blobUrls) URL.revokeObjectURL(url);
    this.blobUrls = [];
    this.images.replaceChildren();
    this.downloads.replaceChildren();
    this.box.hidden = true;
    this.note.hidden = true;
  }

  async show(taskId, result, signal) {
    const artifacts = result.artifacts || [];
    this.box.hidden = artifacts.length === 0 && !result.artifacts_truncated;
    if (result.artifacts_truncated) {
      this.note.textContent = "Some files were left out: over the limits on files out.";
      this.note.hidden = false;
    }
    for (const artifact of artifacts) {
      const url = artifactUrl(taskId, artifact);
      const label = `${artifact.name} (${artifact.content_type}, ${byteSize(artifact.size)})`;
      const kind = (artifact.content_type || "").split(";")[0].trim();
      if (!INLINE_IMAGES.has(kind)) {
        const item = document.createElement("li");
        item.append(this.link(label, url, artifact.name));
        this.downloads.append(item);
        continue;
      }
      const figure = document.createElement("figure");
      const image = document.createElement("img");
      image.alt = artifact.name;
      image.dataset.artifact = artifact.name;
      const caption = document.createElement("figcaption");
      caption.append(this.link(label, url, artifact.name));
      figure.append(image, caption);
      this.images.append(figure);
      try {
        const blobUrl = URL.createObjectURL(await fetchBlob(url, signal));
        this.blobUrls.push(blobUrl);
        image.src = blobUrl;
      } catch (error) {
        if (signal?.aborted) throw error;
        caption.append(` - could not load: ${error.message}`);
      }
    }
  }

  // A link that fetches the file when clicked and saves it. The blob is typed as plain bytes,
  // so nothing (HTML, SVG) is ever rendered from this origin.
  link(label, url, name) {
    const link = document.createElement("a");
    link.href = "#";
    link.textContent = label;
    link.dataset.url = url;
    link.addEventListener("click", async (click) => {
      click.preventDefault();
      try {
        const blob = await fetchBlob(url);
        const saved = URL.createObjectURL(new Blob([blob], { type: "application/octet-stream" }));
        const anchor = document.createElement("a");
        anchor.href = saved;
        anchor.download = name.split("/").pop();
        anchor.click();
        setTimeout(() => URL.revokeObjectURL(saved), 60_000);
      } catch (error) {
        this.onError(error.message);
      }
    });
    return link;
  }
}
