// The live queue: waiting and running jobs per backend, moved by the /ws/jobs/ websocket.
// The server's `snapshot` is the truth on every (re)connect; an `update` that is not newer than what
// we hold is dropped (the channel layer may deliver late or twice). A job's states are ordered by its
// `version` (its `seq` numbers only the timeline's events, so progress moves without it).
(function () {
  "use strict";
  const FINAL = new Set(["completed", "failed", "cancelled"]);
  const FINISHED_KEPT = 20;
  const root = document.getElementById("live-queue");
  const backendsBox = document.getElementById("live-backends");
  const finishedBody = document.querySelector("#live-finished tbody");
  const connection = document.getElementById("live-connection");
  const changeUrl = root.dataset.changeUrl;
  const jobs = new Map();       // id -> job dict as the server sent it
  const rows = new Map();       // id -> <tr>
  let retryDelay = 1000;

  function backendSection(name) {
    let section = document.getElementById("backend-" + name);
    if (section) return section;
    section = document.createElement("section");
    section.className = "live-backend";
    section.id = "backend-" + name;
    section.dataset.backend = name;
    section.innerHTML =
      "<h2></h2>" +
      "<table class='dashboard'><thead><tr><th>job</th><th>type</th><th>user</th><th>priority</th><th>status</th>" +
      "<th>progress</th><th>message</th></tr></thead>" +
      "<tbody class='running'></tbody><tbody class='waiting'></tbody></table>";
    section.querySelector("h2").textContent = name;
    const sections = Array.from(backendsBox.children);
    const after = sections.find((s) => s.dataset.backend > name);
    backendsBox.insertBefore(section, after || null);
    return section;
  }

  function countLabel(section) {
    const running = section.querySelectorAll("tbody.running tr").length;
    const waiting = section.querySelectorAll("tbody.waiting tr").length;
    section.querySelector("h2").textContent = section.dataset.backend + " — " + running + " running, " + waiting + " waiting";
  }

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function buildRow(job) {
    const tr = document.createElement("tr");
    tr.className = "live-job";
    tr.dataset.jobId = job.id;
    const link = document.createElement("a");
    link.href = changeUrl.replace("00000000-0000-0000-0000-000000000000", job.id);
    link.textContent = String(job.id).slice(0, 8);
    const idCell = document.createElement("td");
    idCell.appendChild(link);
    const badge = document.createElement("span");
    const statusCell = document.createElement("td");
    statusCell.appendChild(badge);
    const bar = document.createElement("div");
    bar.className = "progress";
    bar.innerHTML = "<div class='progress-fill' role='progressbar' aria-valuemin='0' aria-valuemax='100'></div>";
    const barCell = document.createElement("td");
    barCell.appendChild(bar);
    tr.append(idCell, cell(job.job_type), cell(job.user || "–"), cell(job.priority), statusCell, barCell, cell(""));
    return tr;
  }

  function paint(tr, job) {
    const badge = tr.querySelector("span");
    badge.className = "badge badge-" + job.status;
    badge.textContent = job.status;
    const fill = tr.querySelector(".progress-fill");
    const percent = Math.max(0, Math.min(100, Number(job.progress_percent) || 0));
    fill.style.width = percent + "%";
    fill.setAttribute("aria-valuenow", String(percent));
    fill.classList.toggle("done", job.status === "completed");
    tr.lastChild.textContent = job.cancel_requested && !FINAL.has(job.status) ? "cancelling… " + job.message : job.message;
    tr.dataset.status = job.status;
    tr.dataset.version = order(job);
  }

  function place(job) {
    let tr = rows.get(job.id);
    if (!tr) {
      tr = buildRow(job);
      rows.set(job.id, tr);
    }
    paint(tr, job);
    const previous = tr.closest("section.live-backend");
    if (FINAL.has(job.status)) {
      // Finished jobs move out of the queue into a short "recently finished" list.
      tr.cells[2].textContent = job.backend;
      finishedBody.insertBefore(tr, finishedBody.firstChild);
      while (finishedBody.children.length > FINISHED_KEPT) finishedBody.lastChild.remove();
    } else {
      const section = backendSection(job.backend);
      const body = section.querySelector(job.status === "queued" ? "tbody.waiting" : "tbody.running");
      if (tr.parentNode !== body) body.appendChild(tr);
      countLabel(section);
    }
    if (previous) countLabel(previous);
  }

  function order(job) {
    return job.version !== undefined ? job.version : job.seq;
  }

  function apply(job) {
    const held = jobs.get(job.id);
    if (held && order(job) <= order(held)) return;  // stale or repeated
    jobs.set(job.id, job);
    place(job);
  }

  function applySnapshot(list) {
    const live = new Set(list.map((job) => job.id));
    // Jobs we show as waiting/running that the snapshot no longer lists finished while we were away.
    for (const [id, job] of jobs) {
      if (!live.has(id) && !FINAL.has(job.status)) {
        rows.get(id).remove();
        rows.delete(id);
        jobs.delete(id);
      }
    }
    list.forEach(apply);
    backendsBox.querySelectorAll("section.live-backend").forEach(countLabel);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/ws/jobs/");
    socket.onopen = () => { connection.textContent = "connected"; retryDelay = 1000; };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "snapshot") applySnapshot(message.jobs);
      else if (message.type === "update") apply(message.job);
    };
    socket.onclose = () => {
      connection.textContent = "disconnected, reconnecting…";
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
    };
  }

  (root.dataset.backends || "").split(",").filter(Boolean).forEach((name) => countLabel(backendSection(name)));
  applySnapshot(JSON.parse(document.getElementById("live-queue-initial").textContent));
  connect();
})();
