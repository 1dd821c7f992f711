// The flowstate web UI: the list of flows and a flow page (diagram, timeline, attributes,
// time slider, diagnostics), kept live over Server-Sent Events.
//
// Plain JavaScript, no build step and no dependencies: the server embeds this file. Routes
// are in the hash: `#/` (the list, with `?kind=&status=&definition=&limit=`) and
// `#/flows/{id}` (a flow, with `?at=SEQ` for the state as of an event).
//
// Test hooks: elements that tests read carry `data-testid` (and `data-id`, `data-state`,
// `data-name`, `data-seq`, `data-type`); keep them stable.
'use strict';

(() => {
  // ---------------------------------------------------------------- DOM helpers

  const SVG_NS = 'http://www.w3.org/2000/svg';

  function append(node, children) {
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      if (Array.isArray(child)) append(node, child);
      else node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith('on') && typeof value === 'function') {
        node.addEventListener(key.slice(2), value);
      } else if (key === 'testid') {
        node.setAttribute('data-testid', value);
      } else if (key === 'text') {
        node.textContent = value;
      } else if (key === 'value' && 'value' in node && !(node instanceof SVGElement)) {
        node.value = value;
      } else {
        node.setAttribute(key, value === true ? '' : String(value));
      }
    }
    return node;
  }

  /** An HTML element: h('div', {class: 'x', testid: 'y', onclick: f}, ...children). */
  function h(tag, attrs, ...children) {
    return append(setAttrs(document.createElement(tag), attrs), children);
  }

  /** An SVG element. */
  function s(tag, attrs, ...children) {
    return append(setAttrs(document.createElementNS(SVG_NS, tag), attrs), children);
  }

  function replace(node, ...children) {
    node.replaceChildren();
    return append(node, children);
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // ---------------------------------------------------------------- formatting

  /** A Date from an RFC 3339 string (every time the API answers is one). */
  function toDate(value) {
    if (typeof value !== 'string' || value === '') return null;
    const parsed = Date.parse(value);
    return Number.isNaN(parsed) ? null : new Date(parsed);
  }

  function ago(date, now = Date.now()) {
    if (!date) return '';
    let secs = Math.max(0, Math.round((now - date.getTime()) / 1000));
    if (secs < 60) return `${secs}s`;
    const mins = Math.floor(secs / 60);
    if (mins < 60) return `${mins}m ${secs % 60}s`;
    const hours = Math.floor(mins / 60);
    if (hours < 48) return `${hours}h ${mins % 60}m`;
    return `${Math.floor(hours / 24)}d`;
  }

  function clock(date) {
    if (!date) return '';
    const pad = (n, w = 2) => String(n).padStart(w, '0');
    return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
  }

  function stamp(date) {
    return date ? date.toISOString().replace('T', ' ').replace('Z', ' UTC') : '';
  }

  function json(value, space) {
    try {
      return JSON.stringify(value, null, space);
    } catch (_) {
      return String(value);
    }
  }

  function short(value, max = 80) {
    const text = typeof value === 'string' ? JSON.stringify(value) : json(value);
    if (text === undefined) return '';
    return text.length > max ? `${text.slice(0, max - 1)}…` : text;
  }

  function clip(text, max) {
    text = String(text);
    return text.length > max ? `${text.slice(0, max - 1)}…` : text;
  }

  /** The colour family of a state key, across all machines. */
  function tone(state) {
    switch (state) {
      case 'completed': case 'success': case 'succeeded': case 'complete': case 'compensated':
        return 'ok';
      case 'active': case 'running': case 'active_current': case 'active_replay':
      case 'reverting': case 'retrying': case 'resuming': case 'scheduling': case 'analyzing':
      case 'compensating': case 'claimed':
        return 'busy';
      case 'failed': case 'failure': case 'replay_failure': case 'revert_failure':
      case 'game_over': case 'compensation_failed':
        return 'bad';
      case 'reverted': case 'suspended': case 'suspending': case 'retry_waiting':
      case 'abandoned': case 'cancelled':
        return 'warn';
      case 'sleeping': case 'waiting':
        return 'wait';
      // Terminal states that say nothing of how the flow ended: its outcome does.
      case 'done': case 'deactivated':
      case 'skipped': case 'ignore': case 'archived':
        return 'off';
      default:
        return 'idle';
    }
  }

  function badge(state, attrs = {}) {
    return h('span', { class: `badge tone-${tone(state)}`, ...attrs }, state || '?');
  }

  function failureText(failure) {
    if (!failure) return '';
    if (typeof failure === 'string') return failure;
    const kind = failure.kind || failure.type || 'Error';
    return failure.message ? `${kind}: ${failure.message}` : kind;
  }

  function stateKey(status) {
    if (!status) return '';
    if (typeof status === 'string') return status;
    return status.state || '';
  }

  // ---------------------------------------------------------------- API

  function token() {
    try {
      return localStorage.getItem('flowstateToken') || '';
    } catch (_) {
      return '';
    }
  }

  function headers(extra = {}) {
    const result = { Accept: 'application/json', ...extra };
    const bearer = token();
    if (bearer) result.Authorization = `Bearer ${bearer}`;
    return result;
  }

  /** A refused request, with its problem details ({type,title,status,detail,code}). */
  class ApiError extends Error {
    constructor(problem) {
      super(problem.detail || problem.title || 'request failed');
      this.problem = problem;
    }
  }

  async function api(path, { method = 'GET', body } = {}) {
    const init = { method, headers: headers(), cache: 'no-store' };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers['Content-Type'] = 'application/json';
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError({
        title: 'Network error', status: 0, code: 'network',
        detail: `${method} ${path}: ${error.message || error} (is the server running?)`,
      });
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (!response.ok) {
      const problem = data && typeof data === 'object' ? data : {};
      throw new ApiError({
        type: problem.type,
        title: problem.title || response.statusText || `HTTP ${response.status}`,
        status: problem.status || response.status,
        detail: problem.detail || (data === null ? text.slice(0, 500) : ''),
        code: problem.code || `http_${response.status}`,
      });
    }
    return data;
  }

  const q = encodeURIComponent;

  // ---------------------------------------------------------------- errors

  const errorBox = document.getElementById('error');

  function showError(error) {
    const problem = error instanceof ApiError
      ? error.problem
      : { title: 'Error', detail: String((error && error.message) || error), code: 'ui' };
    const hint = problem.code === 'unauthorized'
      ? ' Set the token with the Token button (kept in localStorage.flowstateToken).'
      : '';
    replace(errorBox,
      h('strong', { class: 'error-title' }, problem.title || 'Error'),
      problem.status ? h('span', { class: 'error-status' }, ` ${problem.status}`) : null,
      problem.code ? h('code', { class: 'error-code', testid: 'error-code' }, problem.code) : null,
      h('span', { class: 'error-detail', testid: 'error-detail' }, ` ${problem.detail || ''}${hint}`),
      h('button', { type: 'button', class: 'link error-close', title: 'Dismiss', onclick: clearError }, '×'));
    errorBox.dataset.code = problem.code || '';
    errorBox.hidden = false;
  }

  // Whatever the server's Content-Security-Policy blocks is a bug of this page: show it.
  document.addEventListener('securitypolicyviolation', (event) => {
    showError(new Error(`the Content-Security-Policy blocked ${event.blockedURI || 'inline code'} (${event.violatedDirective})`));
  });

  function clearError() {
    errorBox.hidden = true;
    errorBox.replaceChildren();
    delete errorBox.dataset.code;
  }

  // ---------------------------------------------------------------- live updates

  const liveBadge = document.getElementById('live');

  function setLive(connected) {
    liveBadge.dataset.live = connected ? 'true' : 'false';
    liveBadge.textContent = connected ? '● live' : '○ reconnecting';
    liveBadge.classList.toggle('on', connected);
  }

  /**
   * Follows a Server-Sent Events stream (read with fetch, so that it can carry the bearer
   * token), reconnecting with backoff. `path` is a function so a reconnect can resume.
   * Calls `onMessage({event, data})` per message and `onStatus(connected)`.
   * Returns a function that stops it.
   */
  function subscribe(path, onMessage, onStatus) {
    let stopped = false;
    let controller = null;
    let delay = 500;
    (async () => {
      while (!stopped) {
        controller = new AbortController();
        try {
          const response = await fetch(path(), {
            headers: headers({ Accept: 'text/event-stream' }),
            signal: controller.signal,
            cache: 'no-store',
          });
          if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
          onStatus(true);
          delay = 500;
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = '';
          let event = 'message';
          let data = [];
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value;
            let newline;
            while ((newline = buffer.indexOf('\n')) >= 0) {
              let line = buffer.slice(0, newline);
              buffer = buffer.slice(newline + 1);
              if (line.endsWith('\r')) line = line.slice(0, -1);
              if (line === '') {
                if (data.length) {
                  const text = data.join('\n');
                  let parsed = text;
                  try {
                    parsed = JSON.parse(text);
                  } catch (_) { /* keep the text */ }
                  try {
                    onMessage({ event, data: parsed });
                  } catch (error) {
                    console.error(error);
                  }
                }
                event = 'message';
                data = [];
              } else if (line.startsWith(':')) {
                // a comment: keep-alive
              } else {
                const colon = line.indexOf(':');
                const field = colon < 0 ? line : line.slice(0, colon);
                let val = colon < 0 ? '' : line.slice(colon + 1);
                if (val.startsWith(' ')) val = val.slice(1);
                if (field === 'event') event = val;
                else if (field === 'data') data.push(val);
              }
            }
          }
        } catch (error) {
          if (stopped) return;
        }
        if (stopped) return;
        onStatus(false);
        await sleep(delay);
        delay = Math.min(delay * 2, 10000);
      }
    })();
    return () => {
      stopped = true;
      if (controller) controller.abort();
    };
  }

  /**
   * Wraps an async refresh so that calls never overlap: a call made while one runs makes it
   * run once more afterwards (so the last call always sees the latest state).
   */
  function coalesce(fn) {
    let running = false;
    let again = false;
    const run = async () => {
      if (running) {
        again = true;
        return;
      }
      running = true;
      try {
        do {
          again = false;
          try {
            await fn();
          } catch (error) {
            showError(error);
          }
        } while (again);
      } finally {
        running = false;
      }
    };
    return run;
  }

  /**
   * Live refresh: a stream whose every message calls `refresh`; while the stream is down,
   * polls every 2 s instead. Returns a function that stops it.
   */
  function live(path, refresh, onMessage) {
    let poll = null;
    const stop = subscribe(path, (message) => {
      if (onMessage) onMessage(message);
      refresh();
    }, (connected) => {
      setLive(connected);
      if (connected) {
        if (poll) clearInterval(poll);
        poll = null;
        refresh();
      } else if (!poll) {
        poll = setInterval(refresh, 2000);
      }
    });
    return () => {
      stop();
      if (poll) clearInterval(poll);
    };
  }

  // ---------------------------------------------------------------- routing

  const app = document.getElementById('app');
  let view = null;

  function parseHash() {
    const hash = location.hash.replace(/^#/, '') || '/';
    const [path, query] = hash.split('?');
    return { path, params: new URLSearchParams(query || '') };
  }

  /** Rewrites the hash's query without a navigation (no hashchange). */
  function setQuery(path, params) {
    const query = params.toString();
    history.replaceState(null, '', `#${path}${query ? `?${query}` : ''}`);
  }

  function route() {
    if (view) view.destroy();
    view = null;
    clearError();
    setLive(false);
    liveBadge.textContent = '○ connecting';
    const { path, params } = parseHash();
    const flow = path.match(/^\/flows\/([^/]+)\/?$/);
    if (flow) {
      view = flowPage(decodeURIComponent(flow[1]), params);
    } else {
      view = listPage(params);
    }
  }

  // ---------------------------------------------------------------- the list page

  const KINDS = ['plan', 'task_graph', 'function'];
  const STATES = [
    'active', 'completed', 'failed', 'deactivated', 'archived',
    'pending', 'running', 'success', 'failure', 'reverting', 'reverted', 'suspending',
    'suspended', 'resuming',
    'active_current', 'sleeping', 'active_replay', 'replay_failure', 'done',
  ];
  const START_DEFAULTS = {
    plan: { inputs: '{"customer_id": 42}', goals: 'confirmation_id', name: '' },
    task_graph: { inputs: '{"name": "flowstate"}', name: 'greet' },
    function: { inputs: '100', name: 'approval' },
  };

  function startForm() {
    const kind = h('select', { id: 'start-kind', testid: 'start-kind', name: 'kind' },
      h('option', { value: 'plan' }, 'plan'),
      h('option', { value: 'task_graph' }, 'task graph'),
      h('option', { value: 'function' }, 'durable function'));
    const goals = h('input', {
      id: 'start-goals', testid: 'start-goals', name: 'goals', list: 'known-attributes',
      placeholder: 'confirmation_id, …', value: START_DEFAULTS.plan.goals, autocomplete: 'off',
    });
    const name = h('input', {
      id: 'start-name', testid: 'start-name', name: 'name', autocomplete: 'off',
      placeholder: 'definition name',
    });
    const inputs = h('textarea', {
      id: 'start-inputs', testid: 'start-inputs', name: 'inputs', rows: 3, spellcheck: 'false',
    });
    inputs.value = START_DEFAULTS.plan.inputs;
    const inputsLabel = h('span', {}, 'Inputs (JSON object)');
    const submit = h('button', { type: 'submit', class: 'primary', testid: 'start-submit' }, 'Start');
    const goalsField = h('label', { class: 'field' }, h('span', {}, 'Goals (comma separated)'), goals);
    const nameField = h('label', { class: 'field' }, h('span', {}, 'Name'), name);
    const known = h('datalist', { id: 'known-attributes' });
    let lastKind = 'plan';

    function sync() {
      const k = kind.value;
      goalsField.hidden = k !== 'plan';
      nameField.hidden = k === 'plan';
      inputsLabel.textContent = k === 'function' ? 'Input (JSON)' : 'Inputs (JSON object)';
      // Swap in the example's defaults when the user has not changed them.
      const before = START_DEFAULTS[lastKind];
      const after = START_DEFAULTS[k];
      if (inputs.value.trim() === before.inputs || inputs.value.trim() === '') inputs.value = after.inputs;
      if (name.value.trim() === (before.name || '') || name.value.trim() === '') name.value = after.name || '';
      lastKind = k;
    }
    kind.addEventListener('change', sync);

    // Suggest attributes the registered steps provide (best effort).
    api('/api/v1/steps').then((body) => {
      const names = new Set();
      for (const step of (body && body.steps) || []) {
        for (const output of step.outputs || []) names.add(typeof output === 'string' ? output : output.name);
      }
      append(known, [...names].sort().map((n) => h('option', { value: n })));
    }).catch(() => {});

    const form = h('form', { class: 'start card', testid: 'start-form', autocomplete: 'off' },
      h('h2', {}, 'Start a flow'),
      h('div', { class: 'row' },
        h('label', { class: 'field' }, h('span', {}, 'Kind'), kind),
        goalsField, nameField, known),
      h('label', { class: 'field wide' }, inputsLabel, inputs),
      h('div', { class: 'row' }, submit));

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearError();
      const k = kind.value;
      let parsed;
      const text = inputs.value.trim();
      try {
        parsed = text === '' ? (k === 'function' ? null : {}) : JSON.parse(text);
      } catch (error) {
        showError(new ApiError({ title: 'Invalid JSON', code: 'invalid_json', detail: `the inputs are not JSON: ${error.message}` }));
        return;
      }
      let body;
      if (k === 'plan') {
        const list = goals.value.split(',').map((g) => g.trim()).filter(Boolean);
        if (!list.length) {
          showError(new ApiError({ title: 'Missing goals', code: 'invalid_request', detail: 'name at least one goal attribute' }));
          return;
        }
        if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
          showError(new ApiError({ title: 'Invalid inputs', code: 'invalid_request', detail: 'a plan\'s inputs are a JSON object' }));
          return;
        }
        body = { kind: 'plan', goals: list, inputs: parsed };
      } else {
        const n = name.value.trim();
        if (!n) {
          showError(new ApiError({ title: 'Missing name', code: 'invalid_request', detail: 'name the definition to run' }));
          return;
        }
        if (k === 'task_graph') {
          if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
            showError(new ApiError({ title: 'Invalid inputs', code: 'invalid_request', detail: 'a task graph\'s inputs are a JSON object' }));
            return;
          }
          body = { kind: 'task_graph', name: n, inputs: parsed };
        } else {
          body = { kind: 'function', name: n, input: parsed };
        }
      }
      submit.disabled = true;
      try {
        const created = await api('/api/v1/flows', { method: 'POST', body });
        location.hash = `#/flows/${q(created.id)}`;
      } catch (error) {
        showError(error);
      } finally {
        submit.disabled = false;
      }
    });
    sync();
    return form;
  }

  function listPage(params) {
    const filters = {
      kind: params.get('kind') || '',
      status: params.get('status') || '',
      definition: params.get('definition') || '',
      limit: params.get('limit') || '50',
    };
    let pages = 1;
    let nextAfter = null;
    let flows = [];

    const kindFilter = h('select', { testid: 'filter-kind', name: 'kind' },
      h('option', { value: '' }, 'any kind'),
      KINDS.map((k) => h('option', { value: k }, k)));
    kindFilter.value = filters.kind;
    const statusFilter = h('input', {
      testid: 'filter-status', name: 'status', list: 'known-states', placeholder: 'any state',
      value: filters.status, autocomplete: 'off',
    });
    const definitionFilter = h('input', {
      testid: 'filter-definition', name: 'definition', placeholder: 'any definition',
      value: filters.definition, autocomplete: 'off',
    });
    const limitFilter = h('select', { testid: 'filter-limit', name: 'limit' },
      ['25', '50', '100', '200'].map((n) => h('option', { value: n }, `${n} per page`)));
    limitFilter.value = filters.limit;

    const tbody = h('tbody');
    const table = h('table', { class: 'flows', testid: 'flow-list' },
      h('thead', {}, h('tr', {},
        h('th', {}, 'Flow'), h('th', {}, 'Kind'), h('th', {}, 'Definition'), h('th', {}, 'State'),
        h('th', { class: 'num' }, 'Age'), h('th', { class: 'num' }, 'Updated'),
        h('th', { class: 'num' }, 'Events'))),
      tbody);
    const empty = h('p', { class: 'empty', testid: 'flow-list-empty', hidden: true }, 'No flows match.');
    const more = h('button', { type: 'button', class: 'secondary', testid: 'more', hidden: true }, 'Load more');
    const count = h('span', { class: 'muted', testid: 'flow-count' });

    function onFilter() {
      filters.kind = kindFilter.value;
      filters.status = statusFilter.value.trim();
      filters.definition = definitionFilter.value.trim();
      filters.limit = limitFilter.value;
      const next = new URLSearchParams();
      for (const [key, value] of Object.entries(filters)) if (value && !(key === 'limit' && value === '50')) next.set(key, value);
      setQuery('/', next);
      pages = 1;
      refresh();
    }
    kindFilter.addEventListener('change', onFilter);
    limitFilter.addEventListener('change', onFilter);
    statusFilter.addEventListener('change', onFilter);
    definitionFilter.addEventListener('change', onFilter);

    more.addEventListener('click', () => {
      pages += 1;
      refresh();
    });

    function query(after) {
      const p = new URLSearchParams();
      if (filters.kind) p.set('kind', filters.kind);
      if (filters.status) p.set('status', filters.status);
      if (filters.definition) p.set('definition', filters.definition);
      p.set('limit', filters.limit);
      if (after) p.set('after', after);
      return `/api/v1/flows?${p}`;
    }

    const refresh = coalesce(async () => {
      const loaded = [];
      let after = null;
      let page = 0;
      do {
        const body = await api(query(after));
        loaded.push(...(body.flows || []));
        after = body.next_after || null;
        page += 1;
      } while (after && page < pages);
      flows = loaded;
      nextAfter = after;
      render();
    });

    function render() {
      const now = Date.now();
      const sorted = [...flows].sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
      replace(tbody, sorted.map((flow) => {
        const created = toDate(flow.created_at);
        const updated = toDate(flow.updated_at);
        const href = `#/flows/${q(flow.id)}`;
        return h('tr', {
          testid: 'flow-row', 'data-id': flow.id, 'data-state': flow.status, 'data-kind': flow.kind,
          class: 'clickable', onclick: (event) => {
            if (!(event.target instanceof HTMLAnchorElement)) location.hash = href;
          },
        },
        h('td', { class: 'mono' }, h('a', { href, title: flow.id }, flow.id)),
        h('td', {}, flow.kind),
        h('td', {}, flow.definition),
        h('td', {}, badge(flow.status, { testid: 'flow-row-state' })),
        h('td', { class: 'num age', 'data-time': created ? created.getTime() : '', title: stamp(created) }, ago(created, now)),
        h('td', { class: 'num age', 'data-time': updated ? updated.getTime() : '', title: stamp(updated) }, `${ago(updated, now)} ago`),
        h('td', { class: 'num' }, flow.events === undefined ? '' : flow.events));
      }));
      empty.hidden = flows.length > 0;
      more.hidden = !nextAfter;
      count.textContent = `${flows.length} flow${flows.length === 1 ? '' : 's'}${nextAfter ? ' (more below)' : ''}`;
    }

    // Ages tick without refetching.
    const ticker = setInterval(() => {
      const now = Date.now();
      for (const cell of tbody.querySelectorAll('td.age')) {
        const time = Number(cell.dataset.time);
        if (!time) continue;
        const text = ago(new Date(time), now);
        cell.textContent = cell.cellIndex === 5 ? `${text} ago` : text;
      }
    }, 1000);

    replace(app,
      startForm(),
      h('section', { class: 'card' },
        h('div', { class: 'row spread' },
          h('h2', {}, 'Flows'),
          count),
        h('div', { class: 'row filters', testid: 'filters' },
          kindFilter, statusFilter, definitionFilter, limitFilter,
          h('datalist', { id: 'known-states' }, STATES.map((st) => h('option', { value: st })))),
        h('div', { class: 'scroll' }, table),
        empty,
        more));

    const stop = live(() => '/api/v1/events/stream', refresh);
    refresh();
    return {
      destroy() {
        stop();
        clearInterval(ticker);
      },
    };
  }

  // ---------------------------------------------------------------- the flow page

  const EVENT_PAGE = 1000;

  function flowPage(id, params) {
    const initialAt = Number(params.get('at')) || null;
    const page = {
      id,
      at: initialAt, // null: follow the latest event
      record: null,
      events: [], // every event loaded so far, by seq
      totalSeq: 0,
      selected: null, // the step or atom whose details are shown
      expanded: new Set(), // events whose bodies are shown
      gone: false,
    };

    const header = h('div', { class: 'flow-head' });
    const banners = h('div', { class: 'banners' });
    const slider = h('input', { type: 'range', min: 1, max: 1, value: 1, step: 1, testid: 'slider', 'aria-label': 'Show the state as of event' });
    const sliderLabel = h('span', { class: 'slider-label', testid: 'slider-label' });
    const latest = h('button', { type: 'button', class: 'secondary', testid: 'slider-latest', title: 'Follow the latest event' }, 'Latest');
    const diagram = h('div', { class: 'diagram', testid: 'diagram' });
    const timeline = h('ol', { class: 'timeline', testid: 'timeline' });
    const attributes = h('div', { class: 'attributes-box' });
    const details = h('div', { class: 'details' });
    const input = h('pre', { class: 'json', testid: 'flow-input' });
    const actions = h('div', { class: 'actions' });

    replace(app,
      h('p', { class: 'crumbs' }, h('a', { href: '#/' }, '← Flows')),
      header,
      banners,
      h('section', { class: 'card travel' },
        h('div', { class: 'row' },
          h('span', { class: 'muted' }, 'Time'),
          slider, sliderLabel, latest)),
      h('section', { class: 'card' }, h('h2', {}, 'Diagram'), diagram),
      h('div', { class: 'columns' },
        h('section', { class: 'card' }, h('h2', {}, 'Timeline'), h('div', { class: 'timeline-box' }, timeline)),
        h('div', {},
          h('section', { class: 'card' }, h('h2', {}, 'Attributes'), attributes),
          h('section', { class: 'card' }, details),
          h('section', { class: 'card' }, h('h2', {}, 'Input'), input),
          actions)));

    function setAt(seq) {
      const at = seq === null || seq >= page.totalSeq ? null : Math.max(1, seq);
      page.at = at;
      const params2 = new URLSearchParams();
      if (at !== null) params2.set('at', String(at));
      setQuery(`/flows/${q(id)}`, params2);
      slider.value = String(at === null ? page.totalSeq : at);
      renderSliderLabel();
      refresh();
    }

    slider.addEventListener('input', () => setAt(Number(slider.value)));
    slider.addEventListener('change', () => setAt(Number(slider.value)));
    latest.addEventListener('click', () => setAt(null));

    async function loadEvents(upTo) {
      for (;;) {
        const after = page.events.length ? page.events[page.events.length - 1].seq : 0;
        if (upTo !== undefined && after >= upTo) return;
        const body = await api(`/api/v1/flows/${q(id)}/events?after=${after}&limit=${EVENT_PAGE}`);
        const batch = (body && body.events) || [];
        page.events.push(...batch);
        if (batch.length < EVENT_PAGE) return;
      }
    }

    const refresh = coalesce(async () => {
      if (page.gone) return;
      const at = page.at;
      let record;
      try {
        record = await api(`/api/v1/flows/${q(id)}${at === null ? '' : `?at=${at}`}`);
      } catch (error) {
        if (error instanceof ApiError && error.problem.code === 'not_found') {
          page.gone = true;
          replace(header, h('h1', {}, 'Flow not found'), h('p', { class: 'mono' }, id));
        }
        throw error;
      }
      if (page.at !== at) return; // the slider moved meanwhile: the next run fetches it
      page.record = record;
      // A compacted log dropped the events before its first: forget them.
      const first = record.first_seq || 1;
      if (page.events.length && page.events[0].seq < first) page.events = page.events.filter((e) => e.seq >= first);
      page.totalSeq = Math.max(record.total_seq || record.last_seq || 0, page.totalSeq);
      // Everything up to the newest known event (the record was read first, so this
      // includes every event the record folded).
      await loadEvents(page.totalSeq);
      render();
    });

    function renderSliderLabel() {
      const record = page.record;
      const shown = page.at === null ? page.totalSeq : page.at;
      const event = page.events.find((e) => e.seq === shown);
      slider.min = String((record && record.first_seq) || 1);
      slider.max = String(Math.max(page.totalSeq, 1));
      slider.value = String(shown);
      slider.disabled = page.totalSeq <= 1;
      sliderLabel.textContent = `event ${shown} of ${page.totalSeq}${event ? ` · ${event.type} · ${clock(toDate(event.time))}` : ''}${page.at === null ? ' (live)' : ''}`;
      latest.hidden = page.at === null;
      app.dataset.at = page.at === null ? '' : String(page.at);
    }

    function render() {
      const record = page.record;
      if (!record) return;
      renderHeader(record);
      renderBanners(record);
      renderSliderLabel();
      renderDiagram(record);
      renderTimeline(record);
      renderAttributes(record);
      renderDetails(record);
      input.textContent = json(record.input, 2);
      renderActions(record);
    }

    function renderHeader(record) {
      const state = stateKey(record.status);
      const outcome = record.outcome ? record.outcome.outcome : null;
      replace(header,
        h('h1', { class: 'mono', testid: 'flow-id' }, record.id),
        h('div', { class: 'row meta' },
          h('span', { class: `badge big tone-${tone(outcome || state)}`, testid: 'flow-state', 'data-state': state }, state),
          outcome ? h('span', { class: `badge big tone-${tone(outcome)}`, testid: 'flow-outcome', 'data-outcome': outcome }, outcome) : null,
          h('span', { class: 'pill', testid: 'flow-kind' }, record.kind),
          h('span', { class: 'pill', testid: 'flow-definition', title: 'definition' }, record.definition),
          h('span', { class: 'muted' }, `created ${stamp(toDate(record.created_at))}`),
          h('span', { class: 'muted' }, `updated ${stamp(toDate(record.updated_at))}`),
          record.parent ? h('a', { href: `#/flows/${q(record.parent)}`, class: 'pill' }, 'parent flow') : null));
    }

    function renderBanners(record) {
      const items = [];
      const ended = record.outcome;
      if (ended && ended.outcome === 'failed') {
        items.push(h('div', { class: 'banner bad', testid: 'flow-failure' },
          h('strong', {}, 'Failed'), ' ', failureText(ended.failure)));
      } else if (ended && ended.outcome === 'cancelled') {
        items.push(h('div', { class: 'banner warn', testid: 'flow-cancelled' },
          h('strong', {}, 'Cancelled'), ' ', ended.reason || ''));
      }
      if (record.diagnostic) {
        items.push(h('div', { class: 'banner bad', testid: 'diagnostic' },
          h('strong', {}, 'Replay failure'),
          h('p', {}, 'The function\'s code no longer reproduces its journal. Fix the code (or guard the change with ctx.patched), then the flow can run on.'),
          h('pre', { class: 'json' }, record.diagnostic)));
      }
      if (record.kind === 'task_graph' && record.cancel_requested !== undefined && record.cancel_requested !== null) {
        items.push(h('div', { class: 'banner warn', testid: 'cancel-requested' },
          h('strong', {}, 'Cancel requested: '),
          record.cancel_requested || '(no reason)',
          ' — no new atom starts, and what ran is reverted.'));
      }
      const plan = record.plan;
      if (plan && plan.failure) {
        items.push(h('div', { class: 'banner bad', testid: 'flow-failure' },
          h('strong', {}, 'Plan failed: '), failureText(plan.failure)));
      }
      const outcome = record.function && record.function.outcome;
      if (outcome && outcome.Err) {
        items.push(h('div', { class: 'banner bad', testid: 'flow-failure' },
          h('strong', {}, 'Function failed: '), failureText(outcome.Err)));
      }
      replace(banners, items);
    }

    // ------------------------------------------------------------ diagram

    function renderDiagram(record) {
      if (record.plan && record.plan.plan) {
        replace(diagram, planDiagram(record));
      } else if (record.kind === 'plan') {
        replace(diagram, h('p', { class: 'muted' }, 'No plan yet (it is recorded by the flow\'s second event).'));
      } else if (record.kind === 'function' || record.function) {
        replace(diagram, journalView(record));
      } else {
        replace(diagram, atomDiagram(record));
      }
    }

    function selectNode(name) {
      page.selected = page.selected === name ? null : name;
      render();
    }

    function planDiagram(record) {
      const plan = record.plan.plan;
      const steps = plan.steps || {};
      const providers = plan.providers || {};
      const stepRecords = record.plan.steps || {};
      const attributes = record.plan.attributes || {};
      const names = Object.keys(steps);
      const goalAttrs = [];
      const goalSteps = new Set();
      for (const goal of plan.goals || []) {
        if (goal.goal === 'step') goalSteps.add(goal.name);
        else goalAttrs.push(goal.name);
      }
      for (const attr of goalAttrs) if (providers[attr]) goalSteps.add(providers[attr]);

      // Layers: inputs in column 0, a step one right of its latest provider.
      const layer = {};
      const visiting = new Set();
      const layerOf = (name) => {
        if (layer[name] !== undefined) return layer[name];
        if (visiting.has(name)) return 1; // a cycle: should not happen in a plan
        visiting.add(name);
        let l = 1;
        for (const inputSpec of steps[name].inputs || []) {
          const provider = providers[inputSpec.name];
          if (provider && provider !== name && steps[provider]) l = Math.max(l, layerOf(provider) + 1);
        }
        visiting.delete(name);
        layer[name] = l;
        return l;
      };
      names.forEach(layerOf);
      const maxLayer = names.reduce((m, n) => Math.max(m, layer[n]), 0);

      // Nodes: steps, the flow's inputs (left) and goal attributes (right).
      const nodes = [];
      const byKey = {};
      const addNode = (node) => {
        nodes.push(node);
        byKey[node.key] = node;
      };
      const consumed = new Set();
      for (const name of names) for (const i of steps[name].inputs || []) consumed.add(i.name);
      const inputNames = new Set(plan.inputs || []);
      for (const name of consumed) {
        if (!providers[name] && (inputNames.has(name) || attributes[name])) inputNames.add(name);
      }
      for (const name of [...inputNames].sort()) {
        addNode({ key: `in:${name}`, kind: 'attr', name, layer: 0, set: !!attributes[name] });
      }
      for (const name of names) {
        const rec = stepRecords[name] || {};
        addNode({ key: `step:${name}`, kind: 'step', name, layer: layer[name], record: rec, state: rec.state || 'pending', goal: goalSteps.has(name) });
      }
      for (const name of goalAttrs) {
        addNode({ key: `goal:${name}`, kind: 'attr', goal: true, name, layer: maxLayer + 1, set: !!attributes[name] });
      }

      // Edges: provider → consumer, labelled with the attributes.
      const edgeMap = new Map();
      const addEdge = (from, to, attr) => {
        const key = `${from}→${to}`;
        if (!edgeMap.has(key)) edgeMap.set(key, { from, to, attrs: [] });
        edgeMap.get(key).attrs.push(attr);
      };
      for (const name of names) {
        for (const spec of steps[name].inputs || []) {
          const provider = providers[spec.name];
          if (provider && steps[provider] && provider !== name) addEdge(`step:${provider}`, `step:${name}`, spec.name);
          else if (byKey[`in:${spec.name}`]) addEdge(`in:${spec.name}`, `step:${name}`, spec.name);
        }
      }
      for (const name of goalAttrs) {
        const provider = providers[name];
        if (provider && steps[provider]) addEdge(`step:${provider}`, `goal:${name}`, name);
        else if (byKey[`in:${name}`]) addEdge(`in:${name}`, `goal:${name}`, name);
      }
      const edges = [...edgeMap.values()];
      return layout(nodes, edges, attributes);
    }

    /** Lays out layered nodes left to right and draws them as SVG. */
    function layout(nodes, edges, attributes) {
      const STEP_W = 184;
      const STEP_H = 58;
      const ATTR_W = 150;
      const ATTR_H = 30;
      const GAP_X = 96;
      const ROW = 82;
      const PAD = 16;
      const columns = [];
      for (const node of nodes) (columns[node.layer] = columns[node.layer] || []).push(node);
      const cols = [];
      for (const col of columns) if (col && col.length) cols.push(col);
      // Order each column by the mean position of its predecessors (fewer crossings).
      const preds = {};
      for (const edge of edges) (preds[edge.to] = preds[edge.to] || []).push(edge.from);
      const pos = {};
      cols.forEach((col, c) => {
        if (c > 0) {
          const bary = (node) => {
            const ps = (preds[node.key] || []).filter((p) => pos[p] !== undefined);
            return ps.length ? ps.reduce((a, p) => a + pos[p], 0) / ps.length : Infinity;
          };
          col.sort((a, b) => bary(a) - bary(b) || a.name.localeCompare(b.name));
        }
        col.forEach((node, i) => { pos[node.key] = i; });
      });
      const rows = Math.max(1, ...cols.map((col) => col.length));
      const height = PAD * 2 + rows * ROW - (ROW - STEP_H);
      let x = PAD;
      for (const col of cols) {
        const width = Math.max(...col.map((n) => (n.kind === 'step' ? STEP_W : ATTR_W)));
        const offset = (rows - col.length) * ROW / 2;
        col.forEach((node, i) => {
          node.w = node.kind === 'step' ? STEP_W : ATTR_W;
          node.h = node.kind === 'step' ? STEP_H : ATTR_H;
          node.x = x + (width - node.w) / 2;
          node.y = PAD + offset + i * ROW + (STEP_H - node.h) / 2;
        });
        x += width + GAP_X;
      }
      const width = Math.max(x - GAP_X + PAD, 200);

      const byKey = {};
      for (const node of nodes) byKey[node.key] = node;
      const svg = s('svg', {
        class: 'graph', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
        'aria-label': 'The plan: steps left to right, coloured by state',
      },
      s('defs', {},
        s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
          s('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrowhead' }))));
      const edgeLayer = s('g', { class: 'edges' });
      const nodeLayer = s('g', { class: 'nodes' });
      svg.append(edgeLayer, nodeLayer);

      for (const edge of edges) {
        const from = byKey[edge.from];
        const to = byKey[edge.to];
        if (!from || !to) continue;
        const x1 = from.x + from.w;
        const y1 = from.y + from.h / 2;
        const x2 = to.x;
        const y2 = to.y + to.h / 2;
        const dx = Math.max(24, (x2 - x1) / 2);
        const flowing = edge.attrs.every((a) => attributes[a]);
        const label = edge.attrs.join(', ');
        edgeLayer.append(s('g', { class: `edge${flowing ? ' set' : ''}`, testid: 'edge', 'data-from': from.name, 'data-to': to.name },
          s('title', {}, `${from.name} → ${to.name}: ${label}`),
          s('path', { d: `M ${x1} ${y1} C ${x1 + dx} ${y1}, ${x2 - dx} ${y2}, ${x2} ${y2}`, 'marker-end': 'url(#arrow)' }),
          from.kind === 'step' && to.kind === 'step'
            ? s('text', { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 5, class: 'edge-label', 'text-anchor': 'middle' }, clip(label, 18))
            : null));
      }

      for (const node of nodes) {
        if (node.kind === 'step') nodeLayer.append(stepNode(node));
        else nodeLayer.append(attrNode(node, attributes));
      }
      return h('div', { class: 'scroll' }, svg);
    }

    function itemsSummary(rec) {
      const items = rec.items || [];
      if (!items.length) return '';
      const done = items.filter((i) => i.state === 'succeeded').length;
      const attempt = Math.max(...items.map((i) => i.attempt || 0));
      const parts = [];
      if (items.length > 1) parts.push(`${done}/${items.length} items`);
      if (attempt > 1) parts.push(`attempt ${attempt}`);
      return parts.join(' · ');
    }

    function stepNode(node) {
      const rec = node.record || {};
      const why = rec.failure ? failureText(rec.failure) : rec.reason || '';
      const extra = itemsSummary(rec);
      return s('g', {
        class: `node step tone-${tone(node.state)}${node.goal ? ' goal' : ''}${page.selected === node.name ? ' selected' : ''}`,
        testid: 'node', 'data-name': node.name, 'data-state': node.state, 'data-kind': 'step',
        transform: `translate(${node.x} ${node.y})`, tabindex: 0,
        onclick: () => selectNode(node.name),
        onkeydown: (event) => { if (event.key === 'Enter') selectNode(node.name); },
      },
      s('title', {}, `${node.name}: ${node.state}${why ? ` — ${why}` : ''}${node.goal ? ' (goal)' : ''}`),
      s('rect', { width: node.w, height: node.h, rx: 8, ry: 8 }),
      s('text', { x: 12, y: 23, class: 'node-name' }, clip(node.name, 22)),
      s('text', { x: 12, y: 43, class: 'node-state' }, `${node.state}${extra ? ` · ${extra}` : ''}`),
      node.goal ? s('text', { x: node.w - 10, y: 20, class: 'node-goal', 'text-anchor': 'end' }, '★') : null);
    }

    function attrNode(node, attributes) {
      const value = attributes[node.name];
      return s('g', {
        class: `node attr${node.set ? ' set' : ''}${node.goal ? ' goal' : ''}`,
        testid: node.goal ? 'goal-node' : 'input-node', 'data-name': node.name,
        'data-set': node.set ? 'true' : 'false',
        transform: `translate(${node.x} ${node.y})`,
      },
      s('title', {}, `${node.goal ? 'goal' : 'input'} ${node.name}${value ? ` = ${short(value.value, 200)}` : ' (not set)'}`),
      s('rect', { width: node.w, height: node.h, rx: node.h / 2, ry: node.h / 2 }),
      s('text', { x: node.w / 2, y: node.h / 2 + 4, 'text-anchor': 'middle' }, clip(node.name, 20)));
    }

    /** Task graphs: the atoms in a row, in the order the log first names them. */
    function atomDiagram(record) {
      const atoms = record.atoms || {};
      const first = {};
      for (const event of page.events) {
        const atom = event.body && event.body.atom;
        if (atom && first[atom] === undefined) first[atom] = event.seq;
      }
      const names = Object.keys(atoms).sort((a, b) => (first[a] ?? Infinity) - (first[b] ?? Infinity) || a.localeCompare(b));
      if (!names.length) return h('p', { class: 'muted' }, 'No atoms yet.');
      const W = 160;
      const H = 58;
      const GAP = 36;
      const PER_ROW = 6;
      const PAD = 16;
      const rows = Math.ceil(names.length / PER_ROW);
      const width = PAD * 2 + Math.min(names.length, PER_ROW) * (W + GAP) - GAP;
      const height = PAD * 2 + rows * (H + GAP) - GAP;
      const svg = s('svg', { class: 'graph', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'The atoms, coloured by state' },
        s('defs', {},
          s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
            s('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrowhead' }))));
      names.forEach((name, i) => {
        const atom = atoms[name];
        const state = atom.state ? (atom.state.state || atom.state) : 'pending';
        const machine = atom.state && atom.state.machine;
        const x = PAD + (i % PER_ROW) * (W + GAP);
        const y = PAD + Math.floor(i / PER_ROW) * (H + GAP);
        if (i % PER_ROW !== 0) {
          svg.append(s('g', { class: 'edges' }, s('g', { class: 'edge set' }, s('path', { d: `M ${x - GAP} ${y + H / 2} L ${x} ${y + H / 2}`, 'marker-end': 'url(#arrow)' }))));
        }
        const why = atom.failure ? failureText(atom.failure) : '';
        svg.append(s('g', {
          class: `node step tone-${tone(state)}${page.selected === name ? ' selected' : ''}`,
          testid: 'node', 'data-name': name, 'data-state': state, 'data-kind': machine || 'atom',
          transform: `translate(${x} ${y})`, tabindex: 0,
          onclick: () => selectNode(name),
        },
        s('title', {}, `${name} (${machine || 'atom'}): ${state}, intention ${atom.intention || '?'}${why ? ` — ${why}` : ''}`),
        s('rect', { width: W, height: H, rx: 8, ry: 8 }),
        s('text', { x: 12, y: 23, class: 'node-name' }, clip(name, 19)),
        s('text', { x: 12, y: 43, class: 'node-state' }, `${state}${atom.executions > 1 ? ` · run ${atom.executions}` : ''}`)));
      });
      return h('div', { class: 'scroll' }, svg);
    }

    /** Durable functions: the journal as a list. */
    function journalView(record) {
      const fn = record.function || {};
      const journal = fn.journal || [];
      const state = stateKey(record.status);
      const waiting = [];
      for (const name of fn.awaiting || []) waiting.push(`signal "${name}"`);
      for (const pos of fn.awaiting_timers || []) waiting.push(`timer #${pos}`);
      for (const child of fn.awaiting_children || []) waiting.push(`child ${child}`);
      const list = h('ol', { class: 'journal', testid: 'journal', start: 0 },
        journal.map((entry, position) => {
          const branch = fn.branches && fn.branches[position];
          return h('li', {
            class: `journal-entry${entry.outcome && entry.outcome.Err ? ' bad' : ''}`,
            testid: 'journal-entry', 'data-position': position, 'data-effect': entry.effect,
          },
          h('span', { class: 'pos' }, `#${position}`),
          h('span', { class: 'effect' }, entry.effect),
          branch ? h('span', { class: 'pill' }, branch) : null,
          h('span', { class: 'summary' }, journalSummary(entry, fn, position)));
        }));
      return h('div', { class: 'function-view' },
        h('div', { class: 'row meta' },
          h('span', {}, 'Activation '), badge(state),
          fn.run ? h('span', { class: 'muted' }, `run ${fn.run}`) : null,
          waiting.length ? h('span', { class: 'pill wait', testid: 'awaiting' }, `waiting for ${waiting.join(', ')}`) : null,
          fn.cancel_requested !== undefined && fn.cancel_requested !== null ? h('span', { class: 'pill warn' }, `cancel requested: ${fn.cancel_requested || '(no reason)'}`) : null),
        fn.journal_dropped ? h('p', { class: 'muted' }, `The journal was dropped once the function was done (${json(fn.journal_dropped)}).`) : null,
        journal.length ? list : h('p', { class: 'muted' }, 'The journal is empty.'),
        fn.outcome ? h('div', { class: `outcome ${fn.outcome.Err ? 'bad' : 'ok'}`, testid: 'outcome' },
          h('strong', {}, fn.outcome.Err ? 'Failed: ' : 'Returned: '),
          fn.outcome.Err ? failureText(fn.outcome.Err) : short(fn.outcome.Ok, 400)) : null);
    }

    function outcomeText(outcome) {
      if (!outcome) return '';
      if ('Ok' in outcome) return `→ ${short(outcome.Ok)}`;
      if ('Err' in outcome) return `✗ ${failureText(outcome.Err)}`;
      return short(outcome);
    }

    function journalSummary(entry, fn, position) {
      switch (entry.effect) {
        case 'step': return `${entry.name} ${outcomeText(entry.outcome)}`;
        case 'now': return stamp(toDate(entry.time));
        case 'random': case 'uuid': return String(entry.value);
        case 'sleep': {
          const ended = (fn.sleeps_ended || []).includes(position);
          return `until ${stamp(toDate(entry.until))}${ended ? ' (ended)' : ''}`;
        }
        case 'signal': return `${entry.name} = ${short(entry.value)}`;
        case 'patched': return entry.change;
        default: {
          const rest = { ...entry };
          delete rest.effect;
          return short(rest, 160);
        }
      }
    }

    // ------------------------------------------------------------ timeline

    function eventSummary(event) {
      const b = event.body || {};
      const item = (x) => `${x.step}${x.item !== undefined ? `[${x.item}]` : ''}${x.attempt ? ` attempt ${x.attempt}` : ''}`;
      switch (event.type) {
        case 'flow_created': return `${b.kind} ${b.definition}`;
        case 'plan_started': {
          const plan = b.plan || {};
          const goals = (plan.goals || []).map((g) => g.name).join(', ');
          return `${Object.keys(plan.steps || {}).length} steps · goals ${goals}`;
        }
        case 'plan_state_changed': case 'flow_state_changed':
          return `→ ${b.to}${b.reason ? ` (${failureText(b.reason)})` : ''}`;
        case 'activation_state_changed':
          return `→ ${b.to}${b.diagnostic ? ' (diagnostic)' : ''}`;
        case 'task_state_changed': case 'retry_state_changed':
          return `${b.atom} → ${b.to}${b.failure ? ` (${failureText(b.failure)})` : ''}`;
        case 'atom_intention_changed': return `${b.atom} intends ${b.intention}`;
        case 'atom_revert_recovered': return b.atom;
        case 'step_started': return `${b.step}${b.items > 1 ? ` (${b.items} items)` : ''}`;
        case 'step_skipped': return `${b.step}: ${b.reason}`;
        case 'step_failed': return `${b.step}: ${failureText(b.failure)}`;
        case 'step_completed': return b.step;
        case 'work_started': case 'compensation_started': case 'compensation_succeeded': return item(b);
        case 'work_succeeded': return item(b);
        case 'work_failed': case 'compensation_failed': return `${item(b)}: ${failureText(b.failure)}`;
        case 'retry_scheduled': return `${item(b)}: ${failureText(b.failure)}; again at ${clock(toDate(b.due))}`;
        case 'work_abandoned': return `${item(b)}: ${b.reason}`;
        case 'attribute_set': return `${b.name} = ${short(b.value, 60)}${b.step ? ` (from ${b.step})` : ''}`;
        case 'journal_entry_recorded': case 'branch_entry_recorded': {
          const e = b.entry || {};
          return `${b.branch ? `${b.branch} ` : ''}#${b.position} ${e.effect}${e.name ? ` ${e.name}` : ''}${e.outcome ? ` ${outcomeText(e.outcome)}` : ''}`;
        }
        case 'timer_awaited': case 'sleep_ended': return `#${b.position}`;
        case 'signal_delivered': return `${b.name} = ${short(b.value, 60)}`;
        case 'signal_awaited': return b.name;
        case 'function_returned': return outcomeText(b.outcome);
        case 'journal_dropped': return `${b.entries} entries, ${b.events} events`;
        case 'run_started': return `run ${b.run} on ${b.incarnation}`;
        case 'cancel_requested': return b.reason || '';
        case 'child_of': return `parent ${b.parent}`;
        case 'child_ended': return `${b.child} ${outcomeText(b.outcome)}`;
        case 'child_awaited': return b.child;
        default: {
          const rest = { ...b };
          delete rest.type;
          return short(rest, 100);
        }
      }
    }

    function eventTone(event) {
      const b = event.body || {};
      if (b.to) return tone(b.to);
      if (/failed|abandoned/.test(event.type)) return 'bad';
      if (/succeeded|completed|returned/.test(event.type)) return 'ok';
      if (/started/.test(event.type)) return 'busy';
      return 'idle';
    }

    function renderTimeline(record) {
      const shown = record.last_seq;
      const first = page.events.length ? toDate(page.events[0].time) : null;
      const visible = page.events.filter((event) => event.seq <= shown);
      const box = timeline.parentElement;
      const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 30;
      replace(timeline, visible.map((event) => {
        const time = toDate(event.time);
        const offset = first && time ? `+${((time - first) / 1000).toFixed(3)}s` : '';
        const open = page.expanded.has(event.seq);
        return h('li', {
          class: `event tone-${eventTone(event)}${event.seq === shown && page.at !== null ? ' current' : ''}`,
          testid: 'event', 'data-seq': event.seq, 'data-type': event.type,
        },
        h('button', {
          type: 'button', class: 'link seq', title: 'Show the state as of this event',
          onclick: () => setAt(event.seq),
        }, String(event.seq)),
        h('span', { class: 'time', title: stamp(time) }, offset),
        h('span', { class: 'type' }, event.type),
        h('span', { class: 'summary' }, eventSummary(event)),
        h('button', {
          type: 'button', class: 'link toggle', title: 'Show the event body',
          onclick: () => {
            if (open) page.expanded.delete(event.seq);
            else page.expanded.add(event.seq);
            renderTimeline(page.record);
          },
        }, open ? '−' : '{…}'),
        open ? h('pre', { class: 'json body' }, json(event.body, 2)) : null);
      }));
      if (page.at === null && atBottom) box.scrollTop = box.scrollHeight;
      else if (page.at !== null) {
        const current = timeline.querySelector('.current');
        if (current) current.scrollIntoView({ block: 'nearest' });
      }
    }

    // ------------------------------------------------------------ attributes and details

    function seqLink(seq) {
      return seq ? h('button', { type: 'button', class: 'link', title: 'Show the state as of this event', onclick: () => setAt(seq) }, String(seq)) : '';
    }

    function renderAttributes(record) {
      const plan = record.plan;
      if (!plan) {
        if (record.kind === 'task_graph' || Object.keys(record.atoms || {}).length) {
          // Task graphs: what each atom returned, with the event that recorded it.
          const rows = Object.entries(record.atoms || {}).filter(([, atom]) => atom.result !== undefined);
          replace(attributes, h('table', { class: 'attrs', testid: 'attributes' },
            h('thead', {}, h('tr', {}, h('th', {}, 'Atom'), h('th', {}, 'Result'), h('th', {}, 'Runs'), h('th', { class: 'num' }, 'Seq'))),
            h('tbody', {}, rows.map(([name, atom]) => h('tr', { testid: 'attribute', 'data-name': name },
              h('td', { class: 'mono', 'data-col': 'name' }, name),
              h('td', { class: 'mono value', 'data-col': 'value', title: json(atom.result, 2) }, short(atom.result, 120)),
              h('td', { 'data-col': 'attempt' }, String(atom.executions || 0)),
              h('td', { class: 'num', 'data-col': 'seq' }, seqLink(atom.last_seq)))))),
          rows.length ? null : h('p', { class: 'muted' }, 'No results yet.'));
        } else {
          replace(attributes, h('table', { class: 'attrs', testid: 'attributes' }, h('tbody')),
            h('p', { class: 'muted' }, 'Durable functions keep their values in the journal.'));
        }
        return;
      }
      const rows = Object.entries(plan.attributes || {}).sort((a, b) => (a[1].seq || 0) - (b[1].seq || 0) || a[0].localeCompare(b[0]));
      replace(attributes,
        h('table', { class: 'attrs', testid: 'attributes' },
          h('thead', {}, h('tr', {},
            h('th', {}, 'Name'), h('th', {}, 'Value'), h('th', {}, 'Step'), h('th', { class: 'num' }, 'Attempt'),
            h('th', { class: 'num' }, 'Seq'), h('th', {}, 'Time'))),
          h('tbody', {}, rows.map(([name, attr]) => h('tr', {
            testid: 'attribute', 'data-name': name, 'data-step': attr.step || '', 'data-seq': attr.seq,
          },
          h('td', { class: 'mono', 'data-col': 'name' }, name),
          h('td', { class: 'mono value', 'data-col': 'value', title: json(attr.value, 2) }, short(attr.value, 120)),
          h('td', { 'data-col': 'step' }, attr.step ? h('button', { type: 'button', class: 'link', onclick: () => selectNode(attr.step) }, attr.step) : h('span', { class: 'muted' }, 'input')),
          h('td', { class: 'num', 'data-col': 'attempt' }, attr.step ? String(attr.attempt) : ''),
          h('td', { class: 'num', 'data-col': 'seq' }, seqLink(attr.seq)),
          h('td', { class: 'muted', 'data-col': 'time', title: stamp(toDate(attr.time)) }, clock(toDate(attr.time))))))),
        rows.length ? null : h('p', { class: 'muted' }, 'No attributes yet.'));
    }

    /** Steps in the diagram's order: providers before consumers, then by name. */
    function stepOrder(steps, providers) {
      const depth = {};
      const of = (name, seen = new Set()) => {
        if (depth[name] !== undefined) return depth[name];
        if (seen.has(name)) return 0;
        seen.add(name);
        let d = 0;
        for (const spec of steps[name].inputs || []) {
          const provider = providers[spec.name];
          if (provider && provider !== name && steps[provider]) d = Math.max(d, of(provider, seen) + 1);
        }
        depth[name] = d;
        return d;
      };
      return Object.keys(steps).sort((a, b) => of(a) - of(b) || a.localeCompare(b));
    }

    function renderDetails(record) {
      const plan = record.plan;
      if (plan && plan.plan) {
        const steps = plan.plan.steps || {};
        const recs = plan.steps || {};
        const selected = page.selected && steps[page.selected] ? page.selected : null;
        replace(details,
          h('h2', {}, 'Steps'),
          h('table', { class: 'attrs', testid: 'steps' },
            h('thead', {}, h('tr', {}, h('th', {}, 'Step'), h('th', {}, 'State'), h('th', {}, 'Inputs → outputs'), h('th', {}, 'Items'), h('th', {}, 'Why'))),
            h('tbody', {}, stepOrder(steps, plan.plan.providers || {}).map((name) => {
              const spec = steps[name];
              const rec = recs[name] || {};
              const state = rec.state || 'pending';
              const items = rec.items || [];
              return h('tr', { class: `clickable${selected === name ? ' selected' : ''}`, testid: 'step-row', 'data-name': name, 'data-state': state, onclick: () => selectNode(name) },
                h('td', { class: 'mono' }, `${name}${spec.version ? ` v${spec.version}` : ''}`),
                h('td', {}, badge(state)),
                h('td', { class: 'mono small' }, `${(spec.inputs || []).map((i) => `${i.name}${i.optional ? '?' : ''}`).join(', ')} → ${(spec.outputs || []).join(', ')}`),
                h('td', { class: 'small' }, items.map((i) => badge(i.state, { title: `attempt ${i.attempt}${i.failure ? `: ${failureText(i.failure)}` : ''}` }))),
                h('td', { class: 'small' }, rec.failure ? failureText(rec.failure) : rec.reason || ''));
            }))),
          selected ? h('div', { class: 'selected-step', testid: 'step-details' },
            h('h3', {}, selected),
            h('pre', { class: 'json' }, json({ spec: steps[selected], record: recs[selected] || { state: 'pending' } }, 2))) : null);
      } else if (record.kind === 'task_graph' || Object.keys(record.atoms || {}).length) {
        const atoms = record.atoms || {};
        replace(details,
          h('h2', {}, 'Atoms'),
          h('table', { class: 'attrs', testid: 'atoms' },
            h('thead', {}, h('tr', {}, h('th', {}, 'Atom'), h('th', {}, 'State'), h('th', {}, 'Intention'), h('th', {}, 'Failure'))),
            h('tbody', {}, Object.entries(atoms).map(([name, atom]) => {
              const state = atom.state ? (atom.state.state || atom.state) : '';
              return h('tr', { class: page.selected === name ? 'selected' : '', 'data-name': name, 'data-state': state },
                h('td', { class: 'mono' }, name), h('td', {}, badge(state)), h('td', {}, atom.intention || ''),
                h('td', { class: 'small' }, [atom.failure ? failureText(atom.failure) : '', atom.revert_failure ? ` revert: ${failureText(atom.revert_failure)}` : '']));
            }))),
          page.selected && atoms[page.selected] ? h('pre', { class: 'json', testid: 'step-details' }, json(atoms[page.selected], 2)) : null);
      } else if (record.function) {
        const fn = record.function;
        const inbox = Object.entries(fn.inbox || {});
        replace(details,
          h('h2', {}, 'Function'),
          h('dl', { class: 'facts' },
            h('dt', {}, 'Run'), h('dd', {}, String(fn.run || 0)),
            h('dt', {}, 'Incarnations'), h('dd', { class: 'mono small' }, (fn.incarnations || []).map(([run, inc]) => `${run}: ${inc}`).join(', ') || '—'),
            h('dt', {}, 'Inbox'), h('dd', { class: 'mono small' }, inbox.length ? inbox.map(([n, v]) => `${n} ×${v.length}`).join(', ') : 'empty'),
            h('dt', {}, 'Children'), h('dd', { class: 'mono small' }, Object.keys(fn.children_ended || {}).map((c) => h('a', { href: `#/flows/${q(c)}` }, c)))));
      } else {
        replace(details, h('h2', {}, 'Details'), h('p', { class: 'muted' }, 'Nothing recorded yet.'));
      }
    }

    // What each kind lets a user do, by state (the server refuses anything else with a
    // problem, which is shown): task graphs suspend, resume and cancel; plans cancel while
    // active; functions take signals and cancel until done.
    function allowedActions(record) {
      const state = stateKey(record.status);
      switch (record.kind) {
        case 'task_graph':
          return {
            suspend: state === 'running',
            resume: state === 'suspended',
            cancel: !['success', 'failure', 'reverted'].includes(state) && !record.cancel_requested,
            signal: false,
          };
        case 'plan':
          return { suspend: false, resume: false, cancel: state === 'active', signal: false };
        case 'function':
          return { suspend: false, resume: false, cancel: state !== 'done', signal: state !== 'done' };
        default:
          return { suspend: false, resume: false, cancel: false, signal: false };
      }
    }

    let controls = null; // built once, so that what the user typed survives refreshes

    function buildControls() {
      const outcome = h('p', { class: 'muted small', testid: 'action-outcome' });
      const post = async (action, body) => {
        clearError();
        outcome.textContent = '';
        try {
          const answer = await api(`/api/v1/flows/${q(id)}/${action}`, { method: 'POST', body });
          if (answer && answer.outcome === 'ignored') {
            outcome.textContent = `${action}: nothing to do in this state (ignored)`;
          } else if (answer && answer.outcome) {
            outcome.textContent = `${action}: ${answer.outcome}`;
          }
          refresh();
        } catch (error) {
          showError(error);
        }
      };
      const suspend = h('button', { type: 'button', class: 'secondary', testid: 'suspend-button', title: 'Running atoms finish; nothing new starts' }, 'Suspend');
      suspend.addEventListener('click', () => post('suspend', {}));
      const resume = h('button', { type: 'button', class: 'secondary', testid: 'resume-button', title: 'Hand the flow to the workers again' }, 'Resume');
      resume.addEventListener('click', () => post('resume', {}));
      const stateButtons = h('div', { class: 'row' }, suspend, resume);

      const name = h('input', { testid: 'signal-name', placeholder: 'signal name', value: 'approve' });
      const value = h('input', { testid: 'signal-value', placeholder: 'JSON value', value: 'true' });
      const signalForm = h('form', { class: 'row', testid: 'signal-form' },
        name, value, h('button', { type: 'submit', class: 'secondary' }, 'Send signal'));
      signalForm.addEventListener('submit', async (event) => {
        event.preventDefault();
        clearError();
        let parsed;
        try {
          parsed = value.value.trim() === '' ? null : JSON.parse(value.value);
        } catch (error) {
          showError(new ApiError({ title: 'Invalid JSON', code: 'invalid_json', detail: `the signal value is not JSON: ${error.message}` }));
          return;
        }
        try {
          await api(`/api/v1/flows/${q(id)}/signals`, { method: 'POST', body: { name: name.value.trim(), value: parsed } });
          refresh();
        } catch (error) {
          showError(error);
        }
      });

      const reason = h('input', { testid: 'cancel-reason', placeholder: 'reason' });
      const cancelForm = h('form', { class: 'row', testid: 'cancel-form' },
        reason, h('button', { type: 'submit', class: 'danger', testid: 'cancel-button' }, 'Cancel'));
      cancelForm.addEventListener('submit', (event) => {
        event.preventDefault();
        post('cancel', { reason: reason.value });
      });
      const card = h('section', { class: 'card', testid: 'actions' }, h('h2', {}, 'Actions'), stateButtons, signalForm, cancelForm, outcome);
      append(actions, [card]);
      return { card, stateButtons, suspend, resume, signalForm, cancelForm };
    }

    function renderActions(record) {
      // Actions act on the flow now: none while looking back in time.
      const allowed = page.at === null ? allowedActions(record) : {};
      if (!controls) controls = buildControls();
      controls.suspend.hidden = !allowed.suspend;
      controls.resume.hidden = !allowed.resume;
      controls.stateButtons.hidden = !allowed.suspend && !allowed.resume;
      controls.signalForm.hidden = !allowed.signal;
      controls.cancelForm.hidden = !allowed.cancel;
      controls.card.hidden = !(allowed.suspend || allowed.resume || allowed.signal || allowed.cancel);
    }

    // New events: follow them when live; when looking back, only the slider's range grows.
    const stop = live(
      () => `/api/v1/flows/${q(id)}/stream?after=${page.totalSeq}`,
      () => {
        if (page.at === null) refresh();
        else renderSliderLabel();
      },
      (message) => {
        const seq = message.data && message.data.seq;
        if (typeof seq === 'number' && seq > page.totalSeq) page.totalSeq = seq;
      });
    refresh();
    return {
      destroy() {
        stop();
      },
    };
  }

  // ---------------------------------------------------------------- start

  document.getElementById('token-button').addEventListener('click', () => {
    const current = token();
    const next = window.prompt('Bearer token for the API (empty: none). Kept in this browser\'s localStorage.', current);
    if (next === null) return;
    try {
      if (next.trim()) localStorage.setItem('flowstateToken', next.trim());
      else localStorage.removeItem('flowstateToken');
    } catch (error) {
      showError(error);
    }
    route();
  });

  window.addEventListener('hashchange', route);
  route();
})();
