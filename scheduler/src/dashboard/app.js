// Stratus dashboard: renders the scheduler's snapshot (/api/dashboard, then
// every `snapshot` event of /api/events) into the page of index.html.
//
// Every value that comes from the cluster goes into the page through
// textContent or setAttribute, never through innerHTML. Rows are keyed
// (workers by name, jobs by id, runs by id, frames by name) and updated in
// place, so a snapshot every 500 ms with 100 workers does not rebuild the page.
(function () {
  'use strict';

  var WINDOW_MS = 60000;
  var STREAM_TARGET_HEIGHT = 300;
  var STREAM_LABEL_WIDTH = 104;
  var STREAM_AXIS_HEIGHT = 22;
  var RECONNECT_MS = 3000;

  // One colour per task kind (red is kept for failures).
  var KIND_COLOURS = {
    list_files: '#9c755f',
    read_footers: '#76b7b2',
    load: '#4e79a7',
    head: '#a0cbe8',
    reduce: '#f28e2b',
    groupby_partial: '#59a14f',
    groupby_merge: '#3f7f3a',
    groupby_final: '#8cd17d',
    prepare_write: '#b07aa1',
    write_parts: '#d37295',
    commit_write: '#fabfd2',
    abort_write: '#79706e',
    shuffle_send: '#edc948',
    shuffle_collect: '#b6992d'
  };
  var KIND_ORDER = Object.keys(KIND_COLOURS);
  var FAILED_COLOUR = '#e15759';
  var LOST_COLOUR = '#bab0ac';

  var collator = new Intl.Collator('en', { numeric: true, sensitivity: 'base' });
  var integerFormat = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

  var state = {
    snapshot: null,
    clockOffset: 0, // server clock minus this browser's clock, in ms
    receivedAt: 0,
    snapshots: 0,
    sseSnapshots: 0,
    sort: { key: 'name', dir: 1 },
    workerRows: new Map(),
    workerOrder: '',
    jobs: new Map(),
    runs: new Map(),
    frames: new Map(),
    legendKey: '',
    stream: null // layout of the last drawing, for hover
  };

  function $(id) {
    return document.getElementById(id);
  }

  // ---- formatting -------------------------------------------------------

  function isNumber(v) {
    return typeof v === 'number' && isFinite(v);
  }

  function formatBytes(n) {
    if (!isNumber(n)) return '\u2014';
    var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    var i = 0;
    var v = Math.abs(n);
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    var digits = i === 0 ? 0 : v < 10 ? 2 : v < 100 ? 1 : 0;
    return (n < 0 ? '-' : '') + v.toFixed(digits) + ' ' + units[i];
  }

  function formatDuration(ms) {
    if (!isNumber(ms)) return '\u2014';
    if (ms < 0) ms = 0;
    if (ms < 1000) return Math.round(ms) + ' ms';
    var s = ms / 1000;
    if (s < 10) return s.toFixed(2) + ' s';
    if (s < 60) return s.toFixed(1) + ' s';
    var total = Math.round(s);
    var h = Math.floor(total / 3600);
    var m = Math.floor((total % 3600) / 60);
    var sec = total % 60;
    if (h > 0) return h + 'h ' + pad2(m) + 'm';
    return m + 'm ' + pad2(sec) + 's';
  }

  function formatInteger(n) {
    return isNumber(n) ? integerFormat.format(n) : '\u2014';
  }

  function pad2(n) {
    return (n < 10 ? '0' : '') + n;
  }

  function formatClock(ms) {
    if (!isNumber(ms)) return '\u2014';
    var d = new Date(ms);
    return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
  }

  function formatDateTime(value) {
    if (value === null || value === undefined || value === '') return '\u2014';
    var d = new Date(value);
    if (isNaN(d.getTime())) return String(value);
    return d.getFullYear() + '-' + pad2(d.getMonth() + 1) + '-' + pad2(d.getDate()) + ' ' +
      pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
  }

  // A run metric, by the convention of its name (`describe.seconds`, `len.rows`).
  function formatMetric(name, value) {
    if (!isNumber(value)) return value === null || value === undefined ? '\u2014' : String(value);
    if (/(\.|_)seconds$/.test(name)) return formatDuration(value * 1000);
    if (/(\.|_)bytes$/.test(name)) return formatBytes(value);
    if (Number.isInteger(value)) return formatInteger(value);
    var abs = Math.abs(value);
    if (abs !== 0 && (abs < 0.001 || abs >= 1e9)) return value.toExponential(3);
    return String(Number(value.toPrecision(6)));
  }

  function percent(used, limit) {
    if (!isNumber(used) || !isNumber(limit) || limit <= 0) return 0;
    return Math.max(0, Math.min(100, (used / limit) * 100));
  }

  function levelOf(pct) {
    return pct >= 90 ? 'high' : pct >= 75 ? 'warn' : 'ok';
  }

  // Only http(s) links are made clickable.
  function safeHref(url) {
    if (typeof url !== 'string') return null;
    return /^https?:\/\//i.test(url) ? url : null;
  }

  function kindColour(kind) {
    if (Object.prototype.hasOwnProperty.call(KIND_COLOURS, kind)) return KIND_COLOURS[kind];
    var hash = 0;
    var text = String(kind);
    for (var i = 0; i < text.length; i += 1) hash = (hash * 31 + text.charCodeAt(i)) | 0;
    return 'hsl(' + (((hash % 360) + 360) % 360) + ', 45%, 58%)';
  }

  function isImageName(name) {
    return /\.(png|jpe?g|gif|webp|svg)$/i.test(name);
  }

  function artifactUrl(runId, name) {
    return '/api/runs/' + encodeURIComponent(runId) + '/artifacts/' + encodeURIComponent(name);
  }

  // ---- DOM helpers ------------------------------------------------------

  // el('div', {className: 'x', dataset: {a: 'b'}, title: 't'}, child, 'text', ...)
  function el(tag, props) {
    var node = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (key) {
        var value = props[key];
        if (value === null || value === undefined) return;
        if (key === 'className') node.className = value;
        else if (key === 'text') node.textContent = String(value);
        // Through the CSSOM: a style attribute would be refused by the
        // page's Content-Security-Policy (no inline style).
        else if (key === 'style') node.style.cssText = String(value);
        else if (key === 'dataset') {
          Object.keys(value).forEach(function (d) {
            node.dataset[d] = String(value[d]);
          });
        } else node.setAttribute(key, String(value));
      });
    }
    for (var i = 2; i < arguments.length; i += 1) {
      var child = arguments[i];
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
    }
    return node;
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function setAttr(node, name, value) {
    if (value === null || value === undefined) {
      if (node.hasAttribute(name)) node.removeAttribute(name);
    } else if (node.getAttribute(name) !== String(value)) {
      node.setAttribute(name, String(value));
    }
  }

  function setWidth(node, pct) {
    var width = pct.toFixed(1) + '%';
    if (node.style.width !== width) node.style.width = width;
  }

  // Puts `nodes` into `container` in this order, moving only what is out of
  // place, and removes every other child.
  function placeInOrder(container, nodes) {
    var wanted = new Set(nodes);
    Array.prototype.slice.call(container.children).forEach(function (child) {
      if (!wanted.has(child)) container.removeChild(child);
    });
    var cursor = container.firstChild;
    nodes.forEach(function (node) {
      if (node === cursor) {
        cursor = cursor.nextSibling;
      } else {
        container.insertBefore(node, cursor);
      }
    });
  }

  // Keyed rendering for small lists: an item's node is rebuilt only when its
  // JSON changed.
  function renderKeyed(container, cache, items, keyOf, build) {
    var seen = new Set();
    var nodes = items.map(function (item) {
      var key = String(keyOf(item));
      seen.add(key);
      var signature = JSON.stringify(item);
      var entry = cache.get(key);
      if (!entry || entry.signature !== signature) {
        entry = { node: build(item), signature: signature };
        cache.set(key, entry);
      }
      return entry.node;
    });
    Array.from(cache.keys()).forEach(function (key) {
      if (!seen.has(key)) cache.delete(key);
    });
    placeInOrder(container, nodes);
  }

  function bar(pct, level) {
    var fill = el('div', { className: 'bar-fill' + (level ? ' level-' + level : '') });
    setWidth(fill, pct);
    return el('div', { className: 'bar' }, fill);
  }

  function showEmpty(id, empty) {
    var node = $(id);
    if (node.hidden !== !empty) node.hidden = !empty;
  }

  // ---- header and totals ------------------------------------------------

  function renderCluster(snap) {
    var cluster = snap.cluster || {};
    var workers = snap.workers || [];
    setText($('cluster-address'), cluster.address || '\u2014');
    var dashboard = $('cluster-dashboard');
    var href = safeHref(cluster.dashboard);
    var link = dashboard.querySelector('a');
    if (href) {
      if (!link) {
        dashboard.textContent = '';
        link = el('a');
        dashboard.appendChild(link);
      }
      setAttr(link, 'href', href);
      setText(link, cluster.dashboard);
    } else {
      setText(dashboard, cluster.dashboard || '\u2014');
    }
    setText($('cluster-head-node'), cluster.head_node || '\u2014');
    setText($('cluster-version'), cluster.version || '\u2014');

    setText($('total-workers'), formatInteger(cluster.workers));
    setText($('total-threads'), formatInteger(cluster.threads));
    setText($('total-memory'), formatBytes(cluster.memory_used) + ' / ' + formatBytes(cluster.memory_limit));
    var pct = percent(cluster.memory_used, cluster.memory_limit);
    var memoryBar = $('total-memory-bar');
    setWidth(memoryBar, pct);
    setAttr(memoryBar, 'class', 'bar-fill level-' + levelOf(pct));
    setText($('total-persisted'), formatBytes(cluster.persisted_bytes));
    var running = workers.reduce(function (sum, w) {
      return sum + (isNumber(w.running_tasks) ? w.running_tasks : 0);
    }, 0);
    setText($('total-running'), formatInteger(running));
    var jobsRunning = (snap.jobs || []).filter(function (j) {
      return j.state === 'running';
    }).length;
    setText($('total-jobs'), formatInteger(jobsRunning));

    var title = 'Stratus \u00b7 ' + formatInteger(cluster.workers) + ' workers' +
      (jobsRunning ? ' \u00b7 ' + jobsRunning + ' running' : '');
    if (document.title !== title) document.title = title;
  }

  // ---- workers ----------------------------------------------------------

  var WORKER_SORT_KEYS = {
    name: function (w) { return w.name; },
    host: function (w) { return w.host; },
    threads: function (w) { return w.threads; },
    memory: function (w) { return w.memory_used; },
    persisted: function (w) { return w.persisted_bytes; },
    partitions: function (w) { return w.persisted_partitions; },
    running: function (w) { return w.running_tasks; }
  };

  function compareValues(a, b) {
    if (typeof a === 'number' && typeof b === 'number') return a - b;
    return collator.compare(a === null || a === undefined ? '' : String(a),
      b === null || b === undefined ? '' : String(b));
  }

  function sortedWorkers(workers) {
    var key = WORKER_SORT_KEYS[state.sort.key] || WORKER_SORT_KEYS.name;
    var dir = state.sort.dir;
    return workers.slice().sort(function (a, b) {
      var c = compareValues(key(a), key(b)) * dir;
      return c !== 0 ? c : collator.compare(String(a.name), String(b.name));
    });
  }

  function createWorkerRow(name) {
    var cells = {
      name: el('td', { className: 'name' }),
      host: el('td', { className: 'host' }),
      threads: el('td', { className: 'num' }),
      memoryText: el('span', { className: 'memory-text' }),
      memoryFill: el('div', { className: 'bar-fill' }),
      persisted: el('td', { className: 'num' }),
      running: el('td', { className: 'num running' }),
      link: el('a', { className: 'metrics-link', target: '_blank', rel: 'noopener' }, 'metrics')
    };
    var memory = el('td', { className: 'memory' }, el('div', { className: 'memory-cell' },
      el('div', { className: 'bar' }, cells.memoryFill), cells.memoryText));
    var tr = el('tr', { dataset: { worker: name } },
      cells.name, cells.host, cells.threads, memory, cells.persisted,
      cells.running, el('td', { className: 'link-col' }, cells.link));
    return { tr: tr, cells: cells };
  }

  function updateWorkerRow(row, w) {
    var c = row.cells;
    var name = String(w.name);
    setText(c.name, w.retiring ? name + ' (retiring)' : name);
    setAttr(c.name, 'title', w.address ? name + ' (' + w.address + ')' : name);
    var host = w.host === null || w.host === undefined ? '\u2014' : String(w.host);
    setText(c.host, host);
    setAttr(c.host, 'title', host);
    setText(c.threads, formatInteger(w.threads));
    setText(c.memoryText, formatBytes(w.memory_used) + ' / ' + formatBytes(w.memory_limit) +
      (w.paused ? ' \u00b7 paused' : ''));
    setAttr(c.memoryText, 'title', w.paused ? 'loads wait for spills to disk' : '');
    var pct = percent(w.memory_used, w.memory_limit);
    setWidth(c.memoryFill, pct);
    setAttr(c.memoryFill, 'class', 'bar-fill level-' + levelOf(pct));
    var spilled = w.spilled_bytes || 0;
    setText(c.persisted, formatBytes(w.persisted_bytes) +
      (spilled > 0 ? ' (' + formatBytes(spilled) + ' on disk)' : ''));
    setAttr(c.persisted, 'title', formatInteger(w.persisted_partitions) + ' partitions' +
      (spilled > 0 ? ', ' + formatBytes(spilled) + ' spilled to disk' : ''));
    setText(c.running, formatInteger(w.running_tasks));
    setAttr(c.running, 'class', 'num running' + (w.running_tasks > 0 ? ' busy' : ''));
    var href = safeHref(w.metrics_url);
    setAttr(c.link, 'href', href);
    setAttr(c.link, 'title', href);
    c.link.hidden = !href;
  }

  function renderWorkers(workers) {
    var tbody = $('workers');
    var seen = new Set();
    var ordered = sortedWorkers(workers);
    var nodes = ordered.map(function (w) {
      var name = String(w.name);
      seen.add(name);
      var row = state.workerRows.get(name);
      if (!row) {
        row = createWorkerRow(name);
        state.workerRows.set(name, row);
      }
      updateWorkerRow(row, w);
      return row.tr;
    });
    Array.from(state.workerRows.keys()).forEach(function (name) {
      if (!seen.has(name)) state.workerRows.delete(name);
    });
    var order = ordered.map(function (w) { return String(w.name); }).join('\u0000');
    if (order !== state.workerOrder || tbody.children.length !== nodes.length) {
      placeInOrder(tbody, nodes);
      state.workerOrder = order;
    }
    setText($('workers-count'), workers.length === 1 ? '1 worker' : formatInteger(workers.length) + ' workers');
    showEmpty('workers-empty', workers.length === 0);
  }

  function setupSorting() {
    var headers = document.querySelectorAll('#workers-table th[data-sort]');
    Array.prototype.forEach.call(headers, function (th) {
      th.tabIndex = 0;
      var activate = function () {
        var key = th.dataset.sort;
        if (state.sort.key === key) state.sort.dir = -state.sort.dir;
        else state.sort = { key: key, dir: key === 'name' || key === 'host' ? 1 : -1 };
        Array.prototype.forEach.call(headers, function (other) {
          if (other === th) other.setAttribute('aria-sort', state.sort.dir > 0 ? 'ascending' : 'descending');
          else other.removeAttribute('aria-sort');
        });
        state.workerOrder = '';
        if (state.snapshot) renderWorkers(state.snapshot.workers || []);
      };
      th.addEventListener('click', activate);
      th.addEventListener('keydown', function (e) {
        if (e.key === 'Enter' || e.key === ' ') {
          e.preventDefault();
          activate();
        }
      });
    });
  }

  // ---- jobs -------------------------------------------------------------

  function jobDuration(job, now) {
    if (!isNumber(job.started)) return null;
    var end = isNumber(job.ended) ? job.ended : now;
    return end - job.started;
  }

  function buildJob(job) {
    var jobState = String(job.state || 'unknown');
    var duration = el('span', { className: 'job-duration' });
    if (jobState === 'running' && !isNumber(job.ended) && isNumber(job.started)) {
      duration.dataset.started = String(job.started);
    }
    setText(duration, formatDuration(jobDuration(job, serverNow())));

    var meta = el('div', { className: 'job-meta' },
      el('span', { text: '#' + job.id }),
      job.run ? el('span', { className: 'job-run', title: 'run ' + job.run }, 'run ', el('b', { text: job.run })) : null,
      job.client ? el('span', { className: 'job-client', title: 'sent with client certificate ' + job.client }, 'by ', el('b', { text: job.client })) : null,
      el('span', { title: 'started ' + formatDateTime(job.started), text: formatClock(job.started) }),
      duration);

    var head = el('div', { className: 'job-head' },
      el('span', { className: 'badge state-' + jobState, text: jobState }),
      el('span', { className: 'job-kind', text: job.kind }),
      el('span', { className: 'job-target', title: job.target, text: job.target }),
      meta);

    var steps = Array.isArray(job.steps) ? job.steps : [];
    var stepList = el('div', { className: 'steps' });
    steps.forEach(function (step) {
      var done = isNumber(step.done) ? step.done : 0;
      var total = isNumber(step.total) ? step.total : 0;
      var pct = total > 0 ? (done / total) * 100 : done > 0 ? 100 : 0;
      var complete = total > 0 && done >= total;
      stepList.appendChild(el('div', {
        className: 'step' + (complete ? ' complete' : ''),
        dataset: { step: step.name, done: done, total: total }
      },
      el('span', { className: 'step-name', title: step.name, text: step.name }),
      bar(Math.min(100, pct), jobState === 'error' && !complete ? 'high' : complete ? 'done' : 'run'),
      el('span', { className: 'step-count', text: formatInteger(done) + ' / ' + formatInteger(total) })));
    });
    if (job.waiting && jobState === 'running') {
      // The cluster has no worker: say so above the steps it can not run.
      stepList.insertBefore(el('div', { className: 'step waiting', dataset: { waiting: String(job.waiting) } },
        el('span', { className: 'step-name', text: 'waiting for ' + job.waiting }),
        el('div', { className: 'bar indeterminate' }, el('div', { className: 'bar-fill' })),
        el('span', { className: 'step-count' })), stepList.firstChild);
    } else if (steps.length === 0 && jobState === 'running') {
      stepList.appendChild(el('div', { className: 'step' },
        el('span', { className: 'step-name', text: 'waiting' }),
        el('div', { className: 'bar indeterminate' }, el('div', { className: 'bar-fill' })),
        el('span', { className: 'step-count' })));
    }

    return el('article', {
      className: 'job state-' + jobState,
      dataset: { jobId: job.id, jobKind: job.kind, jobState: jobState }
    },
    head,
    stepList.children.length ? stepList : null,
    job.error ? el('div', { className: 'job-error', text: job.error }) : null);
  }

  function renderJobs(jobs) {
    renderKeyed($('jobs'), state.jobs, jobs, function (j) { return j.id; }, buildJob);
    var running = jobs.filter(function (j) { return j.state === 'running'; }).length;
    setText($('jobs-count'), jobs.length ? formatInteger(jobs.length) + ' recent' +
      (running ? ', ' + running + ' running' : '') : '');
    showEmpty('jobs-empty', jobs.length === 0);
  }

  function tickJobDurations() {
    var now = serverNow();
    var nodes = document.querySelectorAll('#jobs .job-duration[data-started]');
    Array.prototype.forEach.call(nodes, function (node) {
      setText(node, formatDuration(now - Number(node.dataset.started)));
    });
  }

  // ---- runs -------------------------------------------------------------

  function buildRun(run) {
    var latest = run.latest && typeof run.latest === 'object' ? run.latest : {};
    var names = Object.keys(latest).sort(collator.compare);
    var metrics = null;
    if (names.length) {
      metrics = el('table', { className: 'metrics' },
        el.apply(null, ['tbody', null].concat(names.map(function (name) {
          return el('tr', { dataset: { metric: name } },
            el('td', { className: 'metric-name', title: name, text: name }),
            el('td', { className: 'num', title: String(latest[name]), text: formatMetric(name, latest[name]) }));
        }))));
    } else {
      metrics = el('div', { className: 'muted', text: 'No metric logged.' });
    }

    var artifacts = Array.isArray(run.artifact_names) ? run.artifact_names : [];
    var thumbs = el('div', { className: 'thumbs' });
    artifacts.forEach(function (name) {
      var url = artifactUrl(run.id, name);
      if (isImageName(name)) {
        thumbs.appendChild(el('a', {
          className: 'thumb', href: url, target: '_blank', rel: 'noopener',
          title: name, dataset: { artifact: name, caption: run.name + ' \u00b7 ' + name }
        },
        el('img', { src: url, alt: name, loading: 'lazy', decoding: 'async' }),
        el('span', { className: 'thumb-name', text: name })));
      } else {
        thumbs.appendChild(el('a', {
          className: 'artifact-file', href: url, target: '_blank', rel: 'noopener',
          dataset: { artifact: name }, text: name
        }));
      }
    });

    var counts = formatInteger(run.metrics) + ' metric values \u00b7 ' + formatInteger(run.artifacts) + ' artifacts';
    return el('article', { className: 'run', dataset: { runId: run.id, runName: run.name } },
      el('div', { className: 'run-head' },
        el('span', { className: 'run-name', title: run.name, text: run.name }),
        el('span', { className: 'run-id', text: '#' + run.id }),
        el('span', { className: 'run-meta', title: 'updated ' + formatDateTime(run.updated) },
          'started ' + formatDateTime(run.started) + ' \u00b7 ' + counts)),
      el('div', { className: 'run-body' }, metrics, artifacts.length ? thumbs : null));
  }

  function renderRuns(runs) {
    renderKeyed($('runs'), state.runs, runs, function (r) { return r.id; }, buildRun);
    setText($('runs-count'), runs.length ? formatInteger(runs.length) + (runs.length === 1 ? ' run' : ' runs') : '');
    showEmpty('runs-empty', runs.length === 0);
  }

  // ---- frames -----------------------------------------------------------

  function buildFrame(frame) {
    return el('tr', { dataset: { frame: frame.name } },
      el('td', { className: 'name', title: frame.name, text: frame.name }),
      el('td', { className: 'num', text: formatInteger(frame.rows) }),
      el('td', { className: 'num', text: formatBytes(frame.bytes) }),
      el('td', { className: 'num', text: formatInteger(frame.partitions) }),
      el('td', { className: 'source', title: frame.source, text: frame.source === null || frame.source === undefined ? '\u2014' : frame.source }));
  }

  function renderFrames(frames) {
    var sorted = frames.slice().sort(function (a, b) {
      return collator.compare(String(a.name), String(b.name));
    });
    renderKeyed($('frames'), state.frames, sorted, function (f) { return f.name; }, buildFrame);
    var bytes = frames.reduce(function (s, f) { return s + (isNumber(f.bytes) ? f.bytes : 0); }, 0);
    setText($('frames-count'), frames.length ? formatInteger(frames.length) + ' \u00b7 ' + formatBytes(bytes) : '');
    showEmpty('frames-empty', frames.length === 0);
  }

  // ---- task stream ------------------------------------------------------

  function serverNow() {
    return Date.now() + state.clockOffset;
  }

  function streamLanes(snap) {
    var names = (snap.workers || []).map(function (w) { return String(w.name); });
    var known = new Set(names);
    var extra = [];
    (snap.tasks || []).forEach(function (t) {
      var name = String(t.worker);
      if (!known.has(name)) {
        known.add(name);
        extra.push(name);
      }
    });
    names.sort(collator.compare);
    extra.sort(collator.compare);
    return names.concat(extra);
  }

  // `text`, cut with an ellipsis to fit `width` pixels.
  function fitText(ctx, text, width) {
    if (ctx.measureText(text).width <= width) return text;
    var cut = text;
    while (cut.length > 1 && ctx.measureText(cut + '\u2026').width > width) cut = cut.slice(0, -1);
    return cut + '\u2026';
  }

  function taskColour(task) {
    if (task.outcome === 'failed') return FAILED_COLOUR;
    if (task.outcome === 'lost') return LOST_COLOUR;
    return kindColour(task.kind);
  }

  function renderLegend(tasks, windowStart) {
    var kinds = new Set();
    var outcomes = new Set();
    tasks.forEach(function (t) {
      if (!(t.end >= windowStart)) return;
      kinds.add(String(t.kind));
      if (t.outcome === 'failed' || t.outcome === 'lost') outcomes.add(t.outcome);
    });
    var list = Array.from(kinds).sort(function (a, b) {
      var ia = KIND_ORDER.indexOf(a);
      var ib = KIND_ORDER.indexOf(b);
      if (ia < 0) ia = KIND_ORDER.length;
      if (ib < 0) ib = KIND_ORDER.length;
      return ia - ib || collator.compare(a, b);
    });
    var key = list.join(',') + '|' + Array.from(outcomes).sort().join(',');
    if (key === state.legendKey) return;
    state.legendKey = key;
    var legend = $('legend');
    legend.textContent = '';
    list.forEach(function (kind) {
      legend.appendChild(el('span', { className: 'legend-item', dataset: { kind: kind } },
        el('span', { className: 'swatch', style: 'background:' + kindColour(kind) }), kind));
    });
    ['failed', 'lost'].forEach(function (outcome) {
      if (!outcomes.has(outcome)) return;
      legend.appendChild(el('span', { className: 'legend-item', dataset: { outcome: outcome } },
        el('span', { className: 'swatch', style: 'background:' + (outcome === 'failed' ? FAILED_COLOUR : LOST_COLOUR) }), outcome));
    });
  }

  function drawStream() {
    var snap = state.snapshot;
    var canvas = $('task-stream');
    if (!snap || !canvas.getContext) return;
    var lanes = streamLanes(snap);
    var tasks = snap.tasks || [];
    var now = serverNow();
    var windowStart = now - WINDOW_MS;
    renderLegend(tasks, windowStart);

    var laneCount = Math.max(lanes.length, 1);
    var laneHeight = Math.max(3, Math.min(24, Math.floor(STREAM_TARGET_HEIGHT / laneCount)));
    var gap = laneHeight >= 12 ? 3 : laneHeight >= 6 ? 1 : 0;
    var top = 4;
    var body = canvas.parentElement;
    var width = Math.max(300, body.clientWidth - 8);
    var height = top + laneCount * laneHeight + STREAM_AXIS_HEIGHT;
    var ratio = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
      canvas.style.width = width + 'px';
      canvas.style.height = height + 'px';
    }
    var ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);

    var left = STREAM_LABEL_WIDTH;
    var plotWidth = Math.max(10, width - left - 10);
    var plotBottom = top + laneCount * laneHeight;
    var xOf = function (t) {
      return left + ((t - windowStart) / WINDOW_MS) * plotWidth;
    };

    // Lanes, every other one shaded, and their labels (as many as fit).
    var laneIndex = new Map();
    var labelEvery = Math.max(1, Math.ceil(13 / laneHeight));
    ctx.font = '11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'right';
    lanes.forEach(function (name, i) {
      laneIndex.set(name, i);
      var y = top + i * laneHeight;
      if (i % 2 === 1) {
        ctx.fillStyle = '#f5f7fa';
        ctx.fillRect(left, y, plotWidth, laneHeight);
      }
      if (i % labelEvery === 0) {
        ctx.fillStyle = '#5b6474';
        ctx.fillText(fitText(ctx, name, left - 14), left - 8, y + laneHeight / 2);
      }
    });

    // Time grid every 10 s, labelled relative to now.
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (var s = 60; s >= 0; s -= 10) {
      var x = Math.round(xOf(now - s * 1000)) + 0.5;
      ctx.strokeStyle = s === 0 ? '#aab2bf' : '#e3e7ee';
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, plotBottom);
      ctx.stroke();
      ctx.fillStyle = '#5b6474';
      ctx.fillText(s === 0 ? 'now' : '\u2212' + s + ' s', Math.min(x, width - 16), plotBottom + 6);
    }
    ctx.strokeStyle = '#aab2bf';
    ctx.beginPath();
    ctx.moveTo(left, plotBottom + 0.5);
    ctx.lineTo(left + plotWidth, plotBottom + 0.5);
    ctx.stroke();

    // One bar per task.
    var drawn = [];
    tasks.forEach(function (t) {
      if (!isNumber(t.start) || !isNumber(t.end) || t.end < windowStart) return;
      var lane = laneIndex.get(String(t.worker));
      if (lane === undefined) return;
      var x1 = xOf(Math.max(t.start, windowStart));
      var x2 = xOf(Math.min(t.end, now));
      var w = Math.max(1.5, x2 - x1);
      var y = top + lane * laneHeight + gap / 2;
      var h = Math.max(1, laneHeight - gap);
      ctx.fillStyle = taskColour(t);
      ctx.fillRect(x1, y, w, h);
      drawn.push({ task: t, x1: x1, x2: x1 + w, lane: lane });
    });

    state.stream = {
      top: top, laneHeight: laneHeight, lanes: lanes, drawn: drawn, width: width, height: height
    };
    canvas.dataset.lanes = String(lanes.length);
    canvas.dataset.tasks = String(drawn.length);
    showEmpty('stream-empty', drawn.length === 0);
  }

  function setupStreamHover() {
    var canvas = $('task-stream');
    var tooltip = $('stream-tooltip');
    var panel = $('task-stream-panel');
    canvas.addEventListener('mousemove', function (e) {
      var layout = state.stream;
      if (!layout) return;
      var rect = canvas.getBoundingClientRect();
      var x = e.clientX - rect.left;
      var y = e.clientY - rect.top;
      var lane = Math.floor((y - layout.top) / layout.laneHeight);
      var hit = null;
      for (var i = layout.drawn.length - 1; i >= 0; i -= 1) {
        var d = layout.drawn[i];
        if (d.lane === lane && x >= d.x1 - 2 && x <= d.x2 + 2) {
          hit = d;
          break;
        }
      }
      if (!hit) {
        tooltip.hidden = true;
        return;
      }
      var t = hit.task;
      tooltip.textContent = '';
      tooltip.appendChild(el('div', { className: 'tooltip-title' },
        el('span', { className: 'swatch', style: 'background:' + taskColour(t) }), String(t.kind)));
      [['worker', t.worker], ['duration', formatDuration(t.end - t.start)], ['job', '#' + t.job],
        ['task', '#' + t.id], ['outcome', t.outcome], ['ended', formatClock(t.end)]].forEach(function (pair) {
        tooltip.appendChild(el('div', { className: 'tooltip-row' },
          el('span', { className: 'muted', text: pair[0] }), el('span', { text: pair[1] })));
      });
      tooltip.hidden = false;
      var panelRect = panel.getBoundingClientRect();
      var left = e.clientX - panelRect.left + 14;
      if (left + tooltip.offsetWidth > panelRect.width - 8) left = e.clientX - panelRect.left - tooltip.offsetWidth - 14;
      tooltip.style.left = left + 'px';
      tooltip.style.top = (e.clientY - panelRect.top + 14) + 'px';
    });
    canvas.addEventListener('mouseleave', function () {
      tooltip.hidden = true;
    });
  }

  // ---- lightbox ---------------------------------------------------------

  function setupLightbox() {
    var box = $('lightbox');
    var image = $('lightbox-image');
    var caption = $('lightbox-caption');
    $('runs').addEventListener('click', function (e) {
      var link = e.target.closest ? e.target.closest('a.thumb') : null;
      if (!link || e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey) return;
      e.preventDefault();
      image.src = link.getAttribute('href');
      image.alt = link.dataset.artifact || '';
      caption.textContent = link.dataset.caption || '';
      box.hidden = false;
    });
    var close = function () {
      box.hidden = true;
      image.removeAttribute('src');
    };
    box.addEventListener('click', close);
    document.addEventListener('keydown', function (e) {
      if (e.key === 'Escape' && !box.hidden) close();
    });
  }

  // ---- snapshots and the connection -------------------------------------

  function apply(snap, source) {
    if (!snap || typeof snap !== 'object') return;
    if (state.snapshot && isNumber(snap.now) && isNumber(state.snapshot.now) && snap.now < state.snapshot.now) return;
    state.snapshot = snap;
    state.receivedAt = Date.now();
    if (isNumber(snap.now)) state.clockOffset = snap.now - state.receivedAt;
    state.snapshots += 1;
    if (source === 'sse') state.sseSnapshots += 1;
    document.body.dataset.snapshots = String(state.snapshots);
    document.body.dataset.sseSnapshots = String(state.sseSnapshots);

    renderCluster(snap);
    renderWorkers(Array.isArray(snap.workers) ? snap.workers : []);
    renderJobs(Array.isArray(snap.jobs) ? snap.jobs : []);
    renderRuns(Array.isArray(snap.runs) ? snap.runs : []);
    renderFrames(Array.isArray(snap.frames) ? snap.frames : []);
    drawStream();
    updateLastUpdate();
  }

  function setConnection(connection) {
    var node = $('connection');
    if (node.dataset.state !== connection) node.dataset.state = connection;
    setText($('connection-text'), connection);
  }

  function updateLastUpdate() {
    if (!state.receivedAt) return;
    var age = Date.now() - state.receivedAt;
    setText($('last-update'), age < 2000 ? 'updated just now' : 'updated ' + formatDuration(age) + ' ago');
    setAttr($('last-update'), 'title', 'last snapshot at ' + formatDateTime(state.receivedAt));
  }

  function connect() {
    if (!window.EventSource) {
      setConnection('polling');
      setInterval(loadOnce, 2000);
      return;
    }
    var source = new EventSource('/api/events');
    source.addEventListener('open', function () {
      setConnection('live');
    });
    source.addEventListener('snapshot', function (e) {
      var snap;
      try {
        snap = JSON.parse(e.data);
      } catch (err) {
        console.error('stratus dashboard: a snapshot event is not JSON', err);
        return;
      }
      setConnection('live');
      apply(snap, 'sse');
    });
    source.addEventListener('error', function () {
      setConnection('reconnecting');
      // EventSource retries by itself unless the server answered with an
      // error status; then start a new one.
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        setTimeout(connect, RECONNECT_MS);
      }
    });
  }

  function loadOnce() {
    return fetch('/api/dashboard', { cache: 'no-store' })
      .then(function (response) {
        if (!response.ok) throw new Error('/api/dashboard answered ' + response.status);
        return response.json();
      })
      .then(function (snap) {
        apply(snap, 'fetch');
      })
      .catch(function (err) {
        console.warn('stratus dashboard:', err.message || err);
      });
  }

  function start() {
    setupSorting();
    setupStreamHover();
    setupLightbox();
    window.addEventListener('resize', drawStream);
    loadOnce();
    connect();
    setInterval(function () {
      if (document.hidden) return;
      drawStream();
      tickJobDurations();
      updateLastUpdate();
    }, 250);
  }

  start();
})();
