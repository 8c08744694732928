// Luna Multi Saver's frontend extension: ComfyUI serves it from the pack's WEB_DIRECTORY (comfyui/__init__.py).
//
// 1. What the daemon did (issue 13): the pack's job watcher (luna_multi_saver/ui_bridge.py) sends a
//    "luna-multi-saver.job" websocket message whenever a daemon job changes, and, once every image is final, the
//    node's "executed" message again with the real saved files, so the node's images become those files. Here:
//    a badge on the node (pending / retrying / written / discarded / failed), a small panel listing the recent
//    jobs with each discarded or failed image, and a toast when a save fails (or keeps retrying). When the daemon
//    wrote thumbnails (PROTOCOL.md section 12.8), the node previews those small WebPs, and its "Open Image",
//    "Copy Image" and "Save Image" menu entries use the full file instead (the history keeps the full files).
// 2. Workflows from our files: the core frontend 1.27 reads no JPEG at all, and its WebP reader skips no RIFF
//    padding byte (an odd-sized chunk before EXIF hides the workflow, ComfyUI's own lossless files included).
//    app.handleFile (what a drop on the canvas and Workflow > Open call) is wrapped: a JPEG's EXIF, or a WebP's
//    EXIF chunk found wherever it is, restores the workflow; anything else goes to the core handler unchanged.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const EVENT = "luna-multi-saver.job"; // ui_bridge.EVENT
const UI_KEY = "luna_multi_saver"; // ui_bridge.UI_KEY
const NODE_TYPE = "LunaMultiSaver";
const PANEL_ID = "luna-multi-saver-jobs";
const PANEL_ROWS = 8;
const KEPT_JOBS = 64;
const COLORS = {
  pending: "#3b6ea5",
  retrying: "#b8860b",
  written: "#2e7d32",
  discarded: "#8d6e63",
  failed: "#c62828",
  unknown: "#616161",
  unfollowed: "#616161",
};

// -- jobs: the newest event of each, oldest first -----------------------------------------------------------------

const jobs = new Map();
const toasted = new Set();

function remember(event) {
  const known = jobs.get(event.job_id);
  // An event never goes back: a late "pending" (the node's own executed message) does not undo a final state.
  if (known && known.finished && !event.finished) return known;
  jobs.delete(event.job_id);
  jobs.set(event.job_id, event);
  while (jobs.size > KEPT_JOBS) jobs.delete(jobs.keys().next().value);
  return event;
}

function nodeForExecutionId(id) {
  // "12" or, inside subgraphs, "5:12" (each part a node id in the graph the previous part's node holds).
  let graph = app.graph;
  let node = null;
  for (const part of String(id).split(":")) {
    node = graph?.getNodeById?.(Number(part)) ?? graph?.getNodeById?.(part) ?? null;
    if (!node) return null;
    graph = node.subgraph;
  }
  return node;
}

function onJobEvent(event) {
  event = remember(event);
  const node = nodeForExecutionId(event.display_node || event.node);
  if (node && node.lunaJobId === event.job_id) {
    node.lunaJob = event;
    node.setDirtyCanvas?.(true, true);
  }
  renderPanel();
  notify(event);
}

function notify(event) {
  const key = `${event.job_id}:${event.state}`;
  if (toasted.has(key)) return;
  const toast = app.extensionManager?.toast;
  let options = null;
  if (event.state === "failed") {
    options = { severity: "error", summary: "Luna Multi Saver: save failed", detail: event.message };
  } else if (event.state === "retrying") {
    options = { severity: "warn", summary: "Luna Multi Saver: save retrying", detail: event.message, life: 10000 };
  } else if (event.state === "unknown") {
    options = { severity: "info", summary: "Luna Multi Saver", detail: event.message, life: 10000 };
  }
  if (!options) return;
  toasted.add(key);
  toast?.add(options);
}

// What the node previews of a final job: each saved file's thumbnail where the daemon wrote one, else the file
// (ui_bridge.final_output with thumbnails).
export function previews(event) {
  return (event.images || []).map((i) => i.thumbnail || i.file).filter(Boolean);
}

// The full file's /view URL for a preview's URL (a thumbnail of the node's job), or null for any other URL.
export function fullFileUrl(event, src) {
  let url;
  try {
    url = new URL(src, globalThis.location?.href);
  } catch {
    return null;
  }
  const q = url.searchParams;
  const image = (event?.images || []).find(
    (i) => i.thumbnail && i.file && i.thumbnail.filename === q.get("filename") &&
      (i.thumbnail.subfolder || "") === (q.get("subfolder") || ""),
  );
  if (!image) return null;
  q.set("filename", image.file.filename);
  q.set("subfolder", image.file.subfolder || "");
  q.set("type", image.file.type || "output");
  q.delete("preview");
  return url.toString();
}

// The full file on the clipboard, as the core's "Copy Image" does for the file it shows (Chrome writes only
// PNG: anything else is drawn to a canvas of the file's own size first).
async function copyFullFile(full) {
  const blob = await (await fetch(full)).blob();
  const write = (b) => navigator.clipboard.write([new ClipboardItem({ [b.type]: b })]);
  try {
    await write(blob);
  } catch (error) {
    if (blob.type === "image/png") throw error;
    const bitmap = await createImageBitmap(blob);
    const canvas = document.createElement("canvas");
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    canvas.getContext("2d").drawImage(bitmap, 0, 0);
    bitmap.close();
    await write(await new Promise((resolve) => canvas.toBlob(resolve, "image/png")));
  }
}

// The core's "Open Image", "Copy Image" and "Save Image" (litegraphService's getExtraMenuOptions) act on the
// previewed img's src: for a thumbnail they get the full file instead, so what is opened, copied or saved is the
// real image.
function fullFileMenu(node, options) {
  const img = node.imgs?.[node.imageIndex ?? node.overIndex];
  const full = img && fullFileUrl(node.lunaJob, img.src);
  if (!full) return;
  for (const option of options) {
    if (option?.content === "Open Image") option.callback = () => window.open(full, "_blank");
    else if (option?.content === "Copy Image") {
      option.callback = () =>
        copyFullFile(full).catch((e) => console.warn(`[LunaMultiSaver] could not copy ${full}`, e));
    } else if (option?.content === "Save Image") {
      option.callback = () => {
        const a = document.createElement("a");
        a.href = full;
        a.setAttribute("download", new URL(full).searchParams.get("filename"));
        document.body.append(a);
        a.click();
        requestAnimationFrame(() => a.remove());
      };
    }
  }
}

// The node's own "executed" (the temp previews) came after the job had finished: show the saved files again,
// once every listener has seen the current message.
function showFiles(event) {
  if (!event.images?.some((i) => i.file)) return;
  if (nodeForExecutionId(event.display_node || event.node)?.lunaJobId !== event.job_id) return; // a newer job shows
  const files = { images: previews(event), [UI_KEY]: [event] };
  const detail = { node: event.node, display_node: event.display_node, output: files, prompt_id: event.prompt_id };
  setTimeout(() => api.dispatchCustomEvent("executed", detail), 0);
}

// True when `elements` (images the frontend loaded for `node`) show /view files other than the node's current
// outputs (node.images, which the frontend's draw handler sets before it starts loading them). Images that name
// no file (a blob, a data URL) are never stale.
export function staleImages(node, elements) {
  const current = node.images;
  if (!Array.isArray(elements) || !Array.isArray(current) || !current.length) return false;
  const key = (filename, subfolder, type) => `${type || "output"}/${subfolder || ""}/${filename}`;
  const wanted = new Set(current.map((i) => key(i.filename, i.subfolder, i.type)));
  return elements.some((element) => {
    let query;
    try {
      query = new URL(element?.src).searchParams;
    } catch {
      return false;
    }
    const filename = query.get("filename");
    return filename !== null && !wanted.has(key(filename, query.get("subfolder"), query.get("type")));
  });
}

// The server's newest event of a job (ui_bridge.JOB_ROUTE); a 404 means ComfyUI no longer follows it.
async function askServer(sent) {
  let event;
  try {
    const reply = await api.fetchApi(`/luna_multi_saver/jobs/${encodeURIComponent(sent.job_id)}`);
    if (reply.status === 404) {
      const message = "ComfyUI no longer follows this job (it restarted); its files may be in the output folder";
      event = { ...sent, state: "unknown", finished: true, message };
    } else if (reply.ok) {
      event = await reply.json();
    } else return;
  } catch {
    return;
  }
  const before = jobs.get(sent.job_id);
  onJobEvent(event);
  const now = jobs.get(sent.job_id);
  if (now.finished && !before?.finished) showFiles(now);
}

// -- the badge on the node ----------------------------------------------------------------------------------------

export function badgeText(event) {
  const c = event.counts || {};
  const total = Object.values(c).reduce((a, b) => a + b, 0);
  const done = (c.written || 0) + (c.discarded || 0) + (c.failed || 0);
  const parts = [];
  if (event.state === "pending" || event.state === "retrying") parts.push(`${event.state} ${done}/${total}`);
  else if (event.state === "unknown" || event.state === "unfollowed") parts.push(event.state);
  else {
    if (event.state === "failed") parts.push(`${c.failed} failed`);
    parts.push(`written ${c.written || 0}/${total}`);
  }
  if (c.discarded) parts.push(`${c.discarded} discarded`);
  return `daemon: ${parts.join(" · ")}`;
}

function drawBadge(node, ctx) {
  const event = node.lunaJob;
  if (!event || node.flags?.collapsed) return;
  const text = badgeText(event);
  const titleHeight = globalThis.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
  ctx.save();
  ctx.font = "11px sans-serif";
  const width = ctx.measureText(text).width + 12;
  const height = 18;
  const x = Math.max(0, node.size[0] - width - 6);
  const y = -titleHeight + (titleHeight - height) / 2;
  ctx.fillStyle = COLORS[event.state] || COLORS.unknown;
  ctx.beginPath();
  if (ctx.roundRect) ctx.roundRect(x, y, width, height, 4);
  else ctx.rect(x, y, width, height);
  ctx.fill();
  ctx.fillStyle = "#fff";
  ctx.textBaseline = "middle";
  ctx.fillText(text, x + 6, y + height / 2);
  ctx.restore();
}

// -- the panel --------------------------------------------------------------------------------------------------

function panel() {
  let el = document.getElementById(PANEL_ID);
  if (el) return el;
  el = document.createElement("div");
  el.id = PANEL_ID;
  Object.assign(el.style, {
    position: "fixed", right: "12px", bottom: "12px", zIndex: 1000, maxWidth: "440px", maxHeight: "40vh",
    overflowY: "auto", font: "12px sans-serif", color: "#ddd", background: "rgba(20,20,20,0.92)",
    border: "1px solid #444", borderRadius: "6px", padding: "6px 8px", display: "none",
  });
  const head = document.createElement("div");
  head.style.cssText = "display:flex;justify-content:space-between;font-weight:bold;margin-bottom:4px";
  head.append("Luna daemon saves");
  const close = document.createElement("span");
  close.textContent = "×";
  close.title = "Hide until the next save";
  close.style.cursor = "pointer";
  close.onclick = () => { el.style.display = "none"; };
  head.append(close);
  const rows = document.createElement("div");
  rows.className = "luna-rows";
  el.append(head, rows);
  document.body.append(el);
  return el;
}

function renderPanel() {
  const el = panel();
  const rows = el.querySelector(".luna-rows");
  rows.replaceChildren();
  for (const event of [...jobs.values()].slice(-PANEL_ROWS).reverse()) {
    const row = document.createElement("div");
    row.className = "luna-job";
    row.dataset.jobId = event.job_id;
    row.dataset.state = event.state;
    row.style.cssText = `border-left:4px solid ${COLORS[event.state] || COLORS.unknown};padding:2px 6px;margin:3px 0`;
    const title = document.createElement("div");
    title.textContent = `node ${event.display_node || event.node} · job ${event.job_id.slice(0, 12)} · ${event.state}`;
    const message = document.createElement("div");
    message.className = "luna-message";
    message.textContent = event.message;
    row.append(title, message);
    for (const image of event.images || []) {
      if (image.state !== "discarded" && image.state !== "failed") continue;
      const line = document.createElement("div");
      line.className = "luna-image";
      line.dataset.state = image.state;
      line.style.opacity = "0.85";
      const where = image.file ? ` → ${[image.file.subfolder, image.file.filename].filter(Boolean).join("/")}` : "";
      const why = image.state === "discarded" ? (image.scores ? ` (${image.scores})` : "") : `: ${image.error}`;
      line.textContent = `${image.label} ${image.state}${why}${where}`;
      row.append(line);
    }
    rows.append(row);
  }
  el.style.display = jobs.size ? "block" : "none";
}

// -- workflows from JPEG and WebP files ---------------------------------------------------------------------------

const ascii = (bytes, at, n) => String.fromCharCode(...bytes.subarray(at, at + n));

// IFD0's ASCII entries as ComfyUI's frontend reads WebP EXIF: "key:value" strings split at the first colon.
export function exifFields(tiff) {
  const out = {};
  if (tiff.length < 8) return out;
  const little = ascii(tiff, 0, 2) === "II";
  if (!little && ascii(tiff, 0, 2) !== "MM") return out;
  const view = new DataView(tiff.buffer, tiff.byteOffset, tiff.byteLength);
  const ifd = view.getUint32(4, little);
  if (ifd + 2 > tiff.length) return out;
  const entries = view.getUint16(ifd, little);
  for (let i = 0; i < entries; i++) {
    const at = ifd + 2 + i * 12;
    if (at + 12 > tiff.length) break;
    const type = view.getUint16(at + 2, little);
    const count = view.getUint32(at + 4, little);
    if (type !== 2 || count < 1) continue;
    const start = count <= 4 ? at + 8 : view.getUint32(at + 8, little);
    if (start + count > tiff.length) continue;
    const text = new TextDecoder("utf-8").decode(tiff.subarray(start, start + count - 1));
    const colon = text.indexOf(":");
    if (colon > 0) out[text.slice(0, colon)] = text.slice(colon + 1);
  }
  return out;
}

const withoutExifHeader = (b) => (ascii(b, 0, 6) === "Exif\0\0" ? b.subarray(6) : b);

// The APP1 Exif segment of a JPEG (before its first scan), or null.
export function jpegExif(bytes) {
  if (bytes[0] !== 0xff || bytes[1] !== 0xd8) return null;
  let at = 2;
  while (at + 4 <= bytes.length && bytes[at] === 0xff) {
    const marker = bytes[at + 1];
    if (marker === 0xd8 || (marker >= 0xd0 && marker <= 0xd7) || marker === 0x01) { at += 2; continue; }
    if (marker === 0xda || marker === 0xd9) return null;
    const length = (bytes[at + 2] << 8) | bytes[at + 3];
    if (marker === 0xe1 && ascii(bytes, at + 4, 6) === "Exif\0\0") return bytes.subarray(at + 10, at + 2 + length);
    at += 2 + length;
  }
  return null;
}

// The first EXIF chunk of a WebP wherever it is, with RIFF's padding byte after odd-sized chunks.
export function webpExif(bytes) {
  if (bytes.length < 12 || ascii(bytes, 0, 4) !== "RIFF" || ascii(bytes, 8, 4) !== "WEBP") return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 12;
  while (at + 8 <= bytes.length) {
    const size = view.getUint32(at + 4, true);
    if (ascii(bytes, at, 4) === "EXIF") return withoutExifHeader(bytes.subarray(at + 8, at + 8 + size));
    at += 8 + size + (size & 1);
  }
  return null;
}

const isJpeg = (file) => file?.type === "image/jpeg" || /\.jpe?g$/i.test(file?.name || "");
const isWebp = (file) => file?.type === "image/webp" || /\.webp$/i.test(file?.name || "");

async function embedded(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  const tiff = isJpeg(file) ? jpegExif(bytes) : webpExif(bytes);
  if (!tiff) return null;
  const fields = exifFields(tiff);
  return { workflow: fields.workflow || fields.Workflow, prompt: fields.prompt || fields.Prompt };
}

function wrapHandleFile() {
  const core = app.handleFile;
  if (typeof core !== "function" || core.lunaWrapped) return;
  const handleFile = async function (file, ...rest) {
    if (isJpeg(file) || isWebp(file)) {
      const name = (file.name || "").replace(/\.[^.]*$/, "");
      let found = null;
      try {
        found = await embedded(file);
        if (found?.workflow) {
          await this.loadGraphData(JSON.parse(found.workflow), true, true, name);
          return;
        }
        if (found?.prompt && isJpeg(file)) {
          this.loadApiJson(JSON.parse(found.prompt), name);
          return;
        }
      } catch (e) {
        console.warn(`[LunaMultiSaver] ${file.name}: the embedded workflow could not be read`, e);
      }
    }
    return core.call(this, file, ...rest);
  };
  handleFile.lunaWrapped = true;
  handleFile.lunaCore = core; // the core handler alone (the browser tests compare the two)
  app.handleFile = handleFile;
  const input = document.getElementById("comfy-file-input");
  if (input && !/jpe?g/.test(input.accept)) input.accept += ",.jpg,.jpeg,image/jpeg";
}

// -- the extension --------------------------------------------------------------------------------------------------

app.registerExtension({
  name: "luna.multi_saver",
  async setup() {
    api.addEventListener(EVENT, ({ detail }) => onJobEvent(detail));
    wrapHandleFile();
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_TYPE) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const result = onExecuted?.apply(this, arguments);
      const sent = output?.[UI_KEY]?.[0];
      if (!sent) {
        this.lunaJob = this.lunaJobId = undefined; // a local save: no badge
        return result;
      }
      const known = jobs.has(sent.job_id);
      const event = remember(sent);
      this.lunaJobId = event.job_id;
      this.lunaJob = event;
      renderPanel();
      notify(event);
      if (!sent.finished) {
        if (event.finished) showFiles(event); // the job had finished before the node's own message arrived
        else if (!known) askServer(sent); // a page reload, or a cached output naming a job this page never saw
      }
      this.setDirtyCanvas?.(true, true);
      return result;
    };
    // The frontend loads a node's images anew for each output message and lets whichever load ends last set
    // node.imgs: a slow load of the temp previews could end after the saved files' and show the previews again
    // (seen under load). A list naming files that are not the node's current outputs is such a stale load.
    Object.defineProperty(nodeType.prototype, "imgs", {
      configurable: true,
      get() {
        return this.lunaImgs;
      },
      set(elements) {
        if (!staleImages(this, elements)) this.lunaImgs = elements;
      },
    });
    const getExtraMenuOptions = nodeType.prototype.getExtraMenuOptions;
    nodeType.prototype.getExtraMenuOptions = function (canvas, options) {
      const result = getExtraMenuOptions?.apply(this, arguments);
      fullFileMenu(this, options);
      return result;
    };
    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      const result = onDrawForeground?.apply(this, arguments);
      drawBadge(this, ctx);
      return result;
    };
  },
});
