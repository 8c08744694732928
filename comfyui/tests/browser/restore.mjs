// Opens the real ComfyUI frontend in Debian's headless chromium and, for each file given, starts from an empty
// graph, drops the file on the canvas the way a user's drag and drop does, and reports the graph the frontend
// restored (app.graph.serialize()). It also reports what the same frontend builds from the embedded workflow
// object itself, so the caller compares like with like (the frontend adds widget slots and localized names).
//
// Each file is loaded twice: through app.handleFile (with the pack's extension, which wraps it to read JPEG and
// WebP with EXIF anywhere) and through the core handler alone (app.handleFile.lunaCore), so a test tells what the
// core frontend 1.27 restores from what only the extension does.
//
//   node restore.mjs <comfyui url> <request.json>
// request.json: {"files": [{"path": ..., "mime": ..., "workflow": index}], "workflows": [<UI workflows embedded>]}
// (or "workflow": one workflow for every file). Prints one JSON object: {"extension": bool, "references":
// [<graph per workflow>], "reference": <the first>, "results": [{"path", "nodes", "graph", "core_nodes",
// "core_graph"}]}.
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { commandLine, withComfyPage } from "./comfy_page.mjs";

const { url, request } = commandLine();
const ready = () => window.app && window.app.graph && window.app.canvasEl;
const report = await withComfyPage(url, ready, async (page) => {
  const clear = () => page.evaluate(async () => {
    await window.app.loadGraphData({ nodes: [], links: [], groups: [], version: 0.4 }, true, false);
    return window.app.graph.serialize().nodes.length;
  });
  const workflows = request.workflows || [request.workflow];
  const references = [];
  for (const workflow of workflows) {
    references.push(await page.evaluate(async (workflow) => {
      await window.app.loadGraphData(structuredClone(workflow), true, false);
      return window.app.graph.serialize();
    }, workflow));
  }
  const extension = await page.evaluate(() => Boolean(window.app.handleFile.lunaWrapped));

  const results = [];
  for (const file of request.files) {
    const base64 = readFileSync(file.path).toString("base64"); // far cheaper to hand over than a number array
    const restored = {};
    for (const via of ["extension", "core"]) {
      if ((await clear()) !== 0) throw new Error("could not start from an empty graph");
      // With the extension: a drop event with the file, dispatched on the canvas; it bubbles to the frontend's
      // document listener, which hands the file to app.handleFile as it does for a real drag and drop.
      // handleFile is then awaited directly as well (loading the same file twice ends in the same graph), so the
      // report waits for the load. The core handler alone is only called directly.
      restored[via] = await page.evaluate(async ({ base64, name, mime, via }) => {
        const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
        const file = new File([bytes], name, { type: mime });
        const handle = via === "core" ? (window.app.handleFile.lunaCore || window.app.handleFile) : window.app.handleFile;
        // handleFile does not await the graph load for every format (its WebP branch does not): record each
        // loadGraphData it starts and await those, so the graph is read once it is loaded, never after a timer.
        const loads = [];
        const load = window.app.loadGraphData;
        window.app.loadGraphData = function (...args) {
          const pending = load.apply(this, args);
          loads.push(pending);
          return pending;
        };
        try {
          if (via === "extension") {
            const data = new DataTransfer();
            data.items.add(file);
            window.app.canvasEl.dispatchEvent(new DragEvent("drop", { bubbles: true, cancelable: true, dataTransfer: data }));
          }
          await handle.call(window.app, file);
          await Promise.all(loads);
        } finally {
          window.app.loadGraphData = load;
        }
        return window.app.graph.serialize();
      }, { base64, name: basename(file.path), mime: file.mime, via });
    }
    results.push({
      path: file.path,
      nodes: restored.extension.nodes.length,
      graph: restored.extension,
      core_nodes: restored.core.nodes.length,
      core_graph: restored.core,
    });
  }
  return { extension, references, reference: references[0], results };
});
process.stdout.write(JSON.stringify(report));
