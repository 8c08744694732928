// Opens the real ComfyUI frontend in Debian's headless chromium, loads a workflow holding a Luna Multi Saver as
// node 9, queues API prompts from the page (so the page's websocket is the one ComfyUI and the pack's job watcher
// talk to), and reports, for each prompt, what the user sees once the daemon job is final: the node's images
// (node.imgs, what the canvas draws), the badge's job event (node.lunaJob), the panel's row and the toasts.
//
//   node ui.mjs <comfyui url> <request.json>
// request.json: {"workflow": <UI workflow with node 9>, "runs": [{"name": ..., "prompt": <API graph>, "toast": text
// to wait for (optional)}]}
// Prints one JSON object: {"extension": bool, "runs": [{"name", "prompt_id", "executed": [...], "events": [...],
// "job": <node.lunaJob>, "imgs": [src...], "menu": {"opened": [Open Image URL, Save Image URL], "copied":
// [width, height] of what Copy Image copies}, "row": {...},
// "toasts": [text...]}]}.
import { join } from "node:path";
import { DEADLINE_MS, commandLine, withComfyPage } from "./comfy_page.mjs";

const { url, request } = commandLine();
const ready = () => window.app && window.app.graph && window.comfyAPI?.api?.api?.clientId;
// Waits until `final` holds in the page; if it never does, the error says which run and what the page had got, so
// a failure on a loaded CI machine can be read from its log alone.
async function whenFinal(page, name, final) {
  try {
    await page.waitForFunction(final, null, { timeout: DEADLINE_MS, polling: 50 });
  } catch (e) {
    const state = await page.evaluate(() => {
      const node = window.app.graph.getNodeById(9);
      return {
        executed: window.__luna.executed,
        events: window.__luna.events,
        job: node?.lunaJob ?? null,
        imgs: (node?.imgs || []).map((img) => img.src),
      };
    });
    throw new Error(`run "${name}" never became final: ${e.message}\npage state: ${JSON.stringify(state)}`);
  }
}

const report = await withComfyPage(url, ready, async (page) => {
  await page.setViewportSize({ width: 1280, height: 900 });
  // Every message the page gets for node 9, recorded from the start.
  const extension = await page.evaluate(async (workflow) => {
    const api = window.comfyAPI.api.api;
    window.__luna = { executed: [], events: [] };
    api.addEventListener("executed", ({ detail }) => {
      // A copy as it arrived: the frontend keeps the message's output as the node's output and may change it later.
      if (String(detail.node) === "9") window.__luna.executed.push(structuredClone(detail));
    });
    api.addEventListener("luna-multi-saver.job", ({ detail }) => window.__luna.events.push(structuredClone(detail)));
    await window.app.loadGraphData(structuredClone(workflow), true, false);
    return window.app.extensionManager?.extensions?.some?.((e) => e.name === "luna.multi_saver") ??
      Boolean(window.app.handleFile.lunaWrapped);
  }, request.workflow);
  // For the screenshots: close the first-run template dialog and bring node 9 into view.
  await page.keyboard.press("Escape");
  await page.evaluate(() => {
    const node = window.app.graph.getNodeById(9);
    window.app.canvas.ds.scale = 0.8;
    window.app.canvas.ds.offset = [80 - node.pos[0], 120 - node.pos[1]];
    window.app.graph.setDirtyCanvas(true, true);
  });

  const runs = [];
  for (const run of request.runs) {
    const promptId = await page.evaluate(async ({ prompt, workflow }) => {
      window.__luna.executed.length = 0;
      window.__luna.events.length = 0;
      const node = window.app.graph.getNodeById(9);
      node.lunaJob = node.lunaJobId = undefined;
      const reply = await window.comfyAPI.api.api.queuePrompt(0, { output: prompt, workflow });
      return reply.prompt_id;
    }, { prompt: run.prompt, workflow: request.workflow });
    // Final: the badge's job is finished and, when the daemon wrote files, the node draws those files.
    await whenFinal(page, run.name, () => {
      const node = window.app.graph.getNodeById(9);
      const job = node?.lunaJob;
      if (!job?.finished) return false;
      // The node's own message (temp previews, job pending) must have come: when the job finished first, it
      // replaces the saved files until the extension shows them again, so checking before it would race.
      const executed = window.__luna.executed;
      if (!executed.some((e) => e.output?.luna_multi_saver?.[0] && !e.output.luna_multi_saver[0].finished)) return false;
      // What the node previews: each file's thumbnail where the daemon wrote one, else the file.
      const shown = (job.images || []).map((i) => i.thumbnail || i.file).filter(Boolean);
      // Files to show: the last message must be the extension's one with the finished job (it carries them).
      if (shown.length && !executed.at(-1)?.output?.luna_multi_saver?.[0]?.finished) return false;
      const srcs = (node.imgs || []).map((img) => new URL(img.src).searchParams);
      return shown.every((f) => srcs.some((q) => q.get("filename") === f.filename && q.get("subfolder") === f.subfolder));
    });
    if (run.toast) {
      // PrimeVue renders a toast on its next tick: wait for the text the run expects.
      await page.waitForFunction((text) => [...document.querySelectorAll(".p-toast-message")]
        .some((t) => t.textContent.includes(text)), run.toast, { timeout: DEADLINE_MS, polling: 50 });
    }
    const seen = await page.evaluate(async (id) => {
      const node = window.app.graph.getNodeById(9);
      const row = document.querySelector(`#luna-multi-saver-jobs .luna-job[data-job-id="${node.lunaJob.job_id}"]`);
      return {
        executed: structuredClone(window.__luna.executed),
        events: structuredClone(window.__luna.events),
        job: structuredClone(node.lunaJob),
        imgs: (node.imgs || []).map((img) => img.src),
        // What the node's "Open Image" and "Save Image" menu entries open and download for its first image, and
        // the size of the image "Copy Image" puts on the clipboard.
        menu: await (async () => {
          if (!node.imgs?.length) return null;
          node.imageIndex = 0;
          const options = [];
          node.getExtraMenuOptions(window.app.canvas, options);
          const opened = [];
          let copied = null;
          const open = window.open;
          const click = HTMLAnchorElement.prototype.click;
          const write = navigator.clipboard?.write;
          window.open = (u) => opened.push(String(u));
          HTMLAnchorElement.prototype.click = function () { opened.push(this.href); };
          if (navigator.clipboard) {
            navigator.clipboard.write = async (items) => {
              const blob = await items[0].getType(items[0].types[0]);
              const bitmap = await createImageBitmap(blob);
              copied = [bitmap.width, bitmap.height];
            };
          }
          try {
            for (const name of ["Open Image", "Save Image"]) options.find((o) => o?.content === name)?.callback();
            const copy = options.find((o) => o?.content === "Copy Image");
            // Both the core's callback and the extension's await the clipboard write.
            if (copy && navigator.clipboard) await copy.callback();
          } finally {
            window.open = open;
            HTMLAnchorElement.prototype.click = click;
            if (navigator.clipboard) navigator.clipboard.write = write;
            node.imageIndex = null;
          }
          return { opened, copied };
        })(),
        row: row && {
          state: row.dataset.state,
          text: row.textContent,
          images: [...row.querySelectorAll(".luna-image")].map((l) => ({ state: l.dataset.state, text: l.textContent })),
          visible: getComputedStyle(document.getElementById("luna-multi-saver-jobs")).display !== "none",
        },
        toasts: [...document.querySelectorAll(".p-toast-message")].map((t) => t.textContent),
        prompt_id: id,
      };
    }, promptId);
    runs.push({ name: run.name, ...seen });
    // For a person checking the badge and panel by eye: LUNA_UI_SCREENSHOTS=<dir> saves one PNG per run.
    if (process.env.LUNA_UI_SCREENSHOTS) {
      await page.screenshot({ path: join(process.env.LUNA_UI_SCREENSHOTS, `${run.name}.png`) });
    }
  }
  // A late load of earlier images (what the frontend's own loads can deliver last) does not replace the node's
  // current ones, and a load of the current outputs does.
  const staleLoad = await page.evaluate(() => {
    const node = window.app.graph.getNodeById(9);
    const before = (node.imgs || []).map((img) => img.src);
    const stale = new Image();
    stale.src = window.comfyAPI.api.api.apiURL("/view?filename=earlier.png&subfolder=&type=temp");
    node.imgs = [stale];
    const afterStale = (node.imgs || []).map((img) => img.src);
    const current = (node.images || []).map((i) => {
      const img = new Image();
      const query = new URLSearchParams({ filename: i.filename, subfolder: i.subfolder || "", type: i.type });
      img.src = window.comfyAPI.api.api.apiURL(`/view?${query}`);
      return img;
    });
    node.imgs = current;
    return { before, afterStale, afterCurrent: (node.imgs || []).map((img) => img.src) };
  });
  return { extension, runs, staleLoad };
});
process.stdout.write(JSON.stringify(report));
