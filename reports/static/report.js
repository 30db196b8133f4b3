// csr pairs report: the pair browser. Inlined into index.html; it loads the pairs from the
// data/ folder next to it with <script> tags (which browsers allow on file://, unlike fetch),
// one iteration's index and one shard of pairs at a time, and renders one page of them.
// The view is kept in the URL's hash once changed (#iteration=1&page=3&sort=margin-asc&q=square),
// so it can be linked to. With #check=1 it walks every page of every iteration and writes what it
// rendered into <pre id="csr-check"> (the report's browser test reads it).
"use strict";
(function () {
  const meta = JSON.parse(document.getElementById("csr-meta").textContent);
  const byIteration = new Map(meta.iterations.map((it) => [String(it.iteration), it]));
  const loaded = new Map(); // script key -> Promise
  const settle = new Map(); // script key -> resolve
  const indexes = new Map(); // iteration -> [[prompt_id, margin, haystack], ...]
  const shards = new Map(); // "iteration/shard" -> [pair, ...]
  const el = (id) => document.getElementById(id);

  window.CSR = {
    index(iteration, rows) {
      indexes.set(String(iteration), rows);
      done("index/" + iteration);
    },
    shard(iteration, number, pairs) {
      shards.set(iteration + "/" + number, pairs);
      done("shard/" + iteration + "/" + number);
    },
  };

  function done(key) {
    const resolve = settle.get(key);
    if (resolve) resolve();
  }

  function load(key, src) {
    if (!loaded.has(key)) {
      loaded.set(
        key,
        new Promise((resolve, reject) => {
          settle.set(key, resolve);
          const script = document.createElement("script");
          script.src = src;
          script.onerror = () => reject(new Error("cannot load " + src));
          document.head.appendChild(script);
        })
      );
    }
    return loaded.get(key);
  }

  const pad = (n) => String(n).padStart(4, "0");
  const loadIndex = (it) => load("index/" + it, "data/iteration-" + it + "/index.js");
  const loadShard = (it, n) =>
    load("shard/" + it + "/" + n, "data/iteration-" + it + "/shard-" + pad(n) + ".js");

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    const first = meta.iterations.length ? String(meta.iterations[0].iteration) : null;
    const iteration = byIteration.has(params.get("iteration")) ? params.get("iteration") : first;
    const sort = ["stream", "margin-asc", "margin-desc"].includes(params.get("sort"))
      ? params.get("sort")
      : "stream";
    const page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
    return { iteration, sort, page, q: params.get("q") || "", check: params.get("check") === "1" };
  }

  function writeHash(state) {
    const params = new URLSearchParams();
    params.set("iteration", state.iteration);
    params.set("page", String(state.page));
    if (state.sort !== "stream") params.set("sort", state.sort);
    if (state.q) params.set("q", state.q);
    if (state.check) params.set("check", "1");
    const hash = "#" + params.toString();
    if (location.hash !== hash) history.replaceState(null, "", hash);
  }

  // Stream positions of the pairs the filter keeps, in the chosen order.
  function view(state) {
    const rows = indexes.get(state.iteration) || [];
    const words = state.q.toLowerCase().split(/\s+/).filter(Boolean);
    const kept = [];
    rows.forEach((row, position) => {
      if (words.every((w) => row[2].includes(w))) kept.push(position);
    });
    if (state.sort === "margin-asc") kept.sort((a, b) => rows[a][1] - rows[b][1] || a - b);
    if (state.sort === "margin-desc") kept.sort((a, b) => rows[b][1] - rows[a][1] || a - b);
    return kept;
  }

  function node(tag, attrs, ...children) {
    const made = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) made.setAttribute(name, value);
    }
    for (const child of children) {
      made.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return made;
  }

  function sentences(side, response, aggregation) {
    const table = node("table", { class: "sentences " + side });
    table.append(
      node("caption", {}, side + " \u00b7 path " + aggregation + " R " + response.reward),
      node(
        "tr",
        {},
        node("th", { class: "num" }, "#"),
        node("th", {}, "sentence"),
        node("th", { class: "num" }, "R_T"),
        node("th", { class: "num" }, "R_I"),
        node("th", { class: "num" }, "R")
      )
    );
    response.sentences.forEach(([text, rt, ri, r], i) => {
      const words = text.trim()
        ? node("td", {}, text)
        : node("td", { class: "end" }, "(end of response)");
      table.append(
        node(
          "tr",
          { "data-sentence": String(i) },
          node("td", { class: "num" }, String(i + 1)),
          words,
          node("td", { class: "num" }, rt),
          node("td", { class: "num" }, ri),
          node("td", { class: "num" }, r)
        )
      );
    });
    return table;
  }

  function card(pair, position) {
    const picture = pair.image
      ? node("img", { src: pair.image, alt: "image of prompt " + pair.prompt_id })
      : node("div", { class: "noimage" }, "image not found: " + pair.image_missing);
    const head = node(
      "div",
      { class: "head" },
      node("b", {}, "#" + (position + 1)),
      " prompt " + pair.prompt_id + " \u00b7 adapter " + pair.adapter + " \u00b7 margin ",
      node("b", { class: "margin" }, pair.margin)
    );
    return node(
      "article",
      { class: "pair", "data-pair-id": pair.id, "data-position": String(position) },
      picture,
      node(
        "div",
        {},
        head,
        node("div", { class: "prompt" }, pair.prompt),
        node(
          "div",
          { class: "responses" },
          sentences("chosen", pair.chosen, pair.aggregation),
          sentences("rejected", pair.rejected, pair.aggregation)
        )
      )
    );
  }

  async function render(state, remember) {
    const list = el("pairs");
    if (state.iteration === null) {
      list.replaceChildren(node("p", { class: "muted" }, "This run has no pairs."));
      return [];
    }
    const info = byIteration.get(state.iteration);
    await loadIndex(state.iteration);
    const kept = view(state);
    const pages = Math.max(1, Math.ceil(kept.length / meta.pageSize));
    state.page = Math.min(state.page, pages);
    const shown = kept.slice((state.page - 1) * meta.pageSize, state.page * meta.pageSize);
    const needed = [...new Set(shown.map((p) => Math.floor(p / meta.shardSize)))];
    await Promise.all(needed.map((n) => loadShard(state.iteration, n)));
    const cards = shown.map((p) =>
      card(shards.get(state.iteration + "/" + Math.floor(p / meta.shardSize))[p % meta.shardSize], p)
    );
    list.replaceChildren(...cards);
    el("page").value = String(state.page);
    el("page").max = String(pages);
    el("pages").textContent = String(pages);
    el("iteration").value = state.iteration;
    el("sort").value = state.sort;
    if (el("q").value !== state.q) el("q").value = state.q;
    const first = shown.length ? (state.page - 1) * meta.pageSize + 1 : 0;
    el("shown").textContent =
      "pairs " + first + "\u2013" + (first + shown.length - (shown.length ? 1 : 0)) + " of " +
      kept.length + (kept.length !== info.pairs ? " kept by the filter (of " + info.pairs + ")" : "");
    if (remember) writeHash(state);
    return cards;
  }

  function imagesSettled(cards) {
    const images = cards.flatMap((c) => [...c.querySelectorAll("img")]);
    return Promise.all(
      images.map((img) =>
        img.complete
          ? Promise.resolve()
          : new Promise((resolve) => {
              img.addEventListener("load", resolve, { once: true });
              img.addEventListener("error", resolve, { once: true });
            })
      )
    ).then(() => images);
  }

  // Every page of every iteration, through the same render(); the result goes into the DOM.
  async function check() {
    const seen = [];
    const images = { loaded: 0, broken: [] };
    for (const it of meta.iterations) {
      const state = { iteration: String(it.iteration), sort: "stream", page: 1, q: "" };
      for (;;) {
        const cards = await render(state);
        for (const img of await imagesSettled(cards)) {
          if (img.naturalWidth > 0) images.loaded += 1;
          else images.broken.push(img.getAttribute("src"));
        }
        for (const c of cards) {
          seen.push({
            iteration: it.iteration,
            id: c.dataset.pairId,
            chosen: c.querySelectorAll("table.chosen tr[data-sentence]").length,
            rejected: c.querySelectorAll("table.rejected tr[data-sentence]").length,
            image: c.querySelector("img") ? c.querySelector("img").naturalWidth : null,
          });
        }
        if (state.page >= Math.ceil(it.pairs / meta.pageSize)) break;
        state.page += 1;
      }
    }
    const out = node("pre", { id: "csr-check" }, JSON.stringify({ pairs: seen, images }));
    document.body.append(out);
  }

  let state = readHash();
  const show = (remember) =>
    render(state, remember).catch((e) => el("pairs").replaceChildren(node("p", {}, String(e))));
  function change(update) {
    state = Object.assign({}, state, update);
    show(true);
  }
  el("iteration").addEventListener("change", (e) => change({ iteration: e.target.value, page: 1 }));
  el("sort").addEventListener("change", (e) => change({ sort: e.target.value, page: 1 }));
  let typing = null;
  el("q").addEventListener("input", (e) => {
    clearTimeout(typing);
    typing = setTimeout(() => change({ q: e.target.value.trim(), page: 1 }), 200);
  });
  el("page").addEventListener("change", (e) => change({ page: parseInt(e.target.value, 10) || 1 }));
  el("prev").addEventListener("click", () => change({ page: Math.max(1, state.page - 1) }));
  el("next").addEventListener("click", () => change({ page: state.page + 1 }));
  window.addEventListener("hashchange", () => {
    if (!location.hash.includes("=")) return; // a link to a section, not a view of the pairs
    state = readHash();
    show(false);
  });
  if (state.check) {
    check().catch((e) => document.body.append(node("pre", { id: "csr-check" }, "error: " + e)));
  } else {
    show(false);
  }
})();
