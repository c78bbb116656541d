// The diary's page. It speaks the text protocol (docs/PROTOCOL.md): each
// request is POSTed to /api and answered with the protocol's reply; new
// entries arrive over server-sent events from /api/events. Entry text is
// only ever inserted as text (textContent), never as HTML.
'use strict';

const PAGE = 50;
const OUTBOX_KEY = 'diary.outbox';
const $ = (selector) => document.querySelector(selector);

const view = {
  entries: new Map(), // id -> entry, the timeline shown
  oldest: null,
  newest: 0,
  diary: null,
  events: null,
  searching: false,
  sending: false,
  online: true,
  retryMs: 1000,
};

class LoggedOut extends Error {}

// ---- the protocol ----------------------------------------------------

function unescapeText(text) {
  return text.replace(/\\(.)/g, (all, c) =>
    c === 'n' ? '\n' : c === 't' ? '\t' : c === 'r' ? '\r' : c === '\\' ? '\\' : all);
}

// An entry line: ID TAB TIME TAB TEXT [TAB KEY=VALUE]...
function parseEntry(line) {
  const parts = line.split('\t');
  if (parts.length < 3 || !/^\d+$/.test(parts[0])) return null;
  const entry = { id: Number(parts[0]), time: parts[1], text: unescapeText(parts[2]), attrs: {} };
  for (const attr of parts.slice(3)) {
    const eq = attr.indexOf('=');
    if (eq > 0) entry.attrs[attr.slice(0, eq)] = unescapeText(attr.slice(eq + 1));
  }
  return entry;
}

// A reply's lines without the envelope's `id TAG` and a list's `end`.
function replyLines(text) {
  const lines = text.split('\n').filter((l) => l !== '');
  if (lines.length && lines[0].startsWith('id ')) lines.shift();
  if (lines.length && lines[lines.length - 1] === 'end') lines.pop();
  return lines;
}

let counter = 0;
const session = Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, '0')).join('');
function newTag() {
  counter += 1;
  return `w${session}-${Date.now().toString(36)}${counter}`;
}

// A POST of text to the server's own API.
function post(path, body) {
  return fetch(path, {
    method: 'POST',
    body,
    headers: { 'Content-Type': 'text/plain; charset=utf-8' },
    credentials: 'same-origin',
    cache: 'no-store',
  });
}

async function call(line) {
  const response = await post('/api', line);
  if (response.status === 401) throw new LoggedOut(await response.text());
  const text = await response.text();
  if (!response.ok) throw new Error(text.trim() || `HTTP ${response.status}`);
  return text;
}

// Sends one tagged request; its reply's first line after the tag.
async function tagged(command) {
  const lines = replyLines(await call(`/id ${newTag()} ${command}`));
  return lines[0] || '';
}

// ---- showing entries -------------------------------------------------

function localTime(time) {
  const date = new Date(time);
  if (Number.isNaN(date.getTime())) return time;
  return date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

function byline(entry) {
  const by = entry.attrs.by;
  const importer = entry.attrs.imported;
  let text = by ? `by ${by}` : '';
  if (importer !== undefined) text += `${text ? ', ' : ''}imported${importer && importer !== '-' ? ` by ${importer}` : ''}`;
  return text;
}

function entryElement(entry) {
  const node = $('#entry').content.firstElementChild.cloneNode(true);
  node.dataset.id = entry.id;
  const time = node.querySelector('time');
  time.textContent = localTime(entry.time);
  time.dateTime = entry.time;
  time.title = entry.time;
  node.querySelector('.id').textContent = `#${entry.id}`;
  node.querySelector('.by').textContent = byline(entry);
  node.querySelector('.edited').textContent = entry.attrs.edited ? '(edited)' : '';
  node.querySelector('.text').textContent = entry.text;
  node.querySelector('.edit').addEventListener('click', () => startEdit(node, entry));
  node.querySelector('.delete').addEventListener('click', () => remove(entry));
  return node;
}

function render(entries) {
  const list = $('#entries');
  const nearBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
  list.replaceChildren(...entries.map(entryElement), ...pendingElements());
  if (nearBottom) window.scrollTo(0, document.body.scrollHeight);
}

function renderTimeline() {
  if (view.searching) return;
  const entries = [...view.entries.values()].sort((a, b) => a.id - b.id);
  render(entries);
  $('#older').hidden = view.oldest === null || view.oldest <= 1;
}

// Lines typed but not yet stored, shown greyed at the end.
function pendingElements() {
  if (view.searching) return [];
  return outbox().map((item) => {
    const node = entryElement({ id: 0, time: '', text: item.text, attrs: {} });
    node.classList.add('pending');
    node.querySelector('time').textContent = 'not stored yet';
    node.querySelector('.id').textContent = '';
    node.querySelector('.actions').remove();
    return node;
  });
}

// An entry from a reply or the event stream: a new one, an amendment or a deletion.
function apply(entry) {
  if (entry.attrs.amends) {
    const target = view.entries.get(Number(entry.attrs.amends));
    if (target) {
      target.text = entry.text;
      target.attrs.edited = String(entry.id);
    }
  } else if (entry.attrs.deletes) {
    view.entries.delete(Number(entry.attrs.deletes));
  } else {
    view.entries.set(entry.id, entry);
    if (view.oldest === null || entry.id < view.oldest) view.oldest = entry.id;
  }
  view.newest = Math.max(view.newest, entry.id);
}

function notice(text) {
  const node = $('#notice');
  node.textContent = text || '';
  node.hidden = !text;
}

function setStatus(text, offline) {
  const node = $('#status');
  node.textContent = text;
  node.classList.toggle('offline', Boolean(offline));
}

// ---- loading, live updates -------------------------------------------

async function loadNewest() {
  const lines = replyLines(await call(`/past ${PAGE}`));
  view.entries.clear();
  view.oldest = null;
  for (const line of lines) {
    if (line.startsWith('err ')) throw new Error(line);
    const entry = parseEntry(line);
    if (entry) apply(entry);
  }
  if (view.oldest === null) view.oldest = 0;
  renderTimeline();
  window.scrollTo(0, document.body.scrollHeight);
}

async function loadOlder() {
  if (!view.oldest || view.oldest <= 1) return;
  const lines = replyLines(await call(`/past ${PAGE} until ${view.oldest - 1}`));
  const before = document.body.scrollHeight;
  let got = 0;
  for (const line of lines) {
    const entry = parseEntry(line);
    if (entry) {
      apply(entry);
      got += 1;
    }
  }
  if (got === 0) view.oldest = 1;
  renderTimeline();
  window.scrollTo(0, window.scrollY + document.body.scrollHeight - before);
}

function follow() {
  if (view.events) view.events.close();
  let url = `/api/events?since=${view.newest}`;
  if (view.diary) url += `&diary=${encodeURIComponent(view.diary)}`;
  const events = new EventSource(url);
  view.events = events;
  events.onopen = () => {
    setStatus('live');
    sendOutbox();
  };
  events.onmessage = (event) => {
    const entry = parseEntry(event.data);
    if (!entry) return;
    apply(entry);
    renderTimeline();
  };
  events.addEventListener('note', (event) => {
    const match = /in diary (\S+)/.exec(event.data);
    if (match) view.diary = match[1];
  });
  events.addEventListener('refused', (event) => {
    // Behind: the browser reconnects after the last id it got. Another
    // diary, or one restored from an older copy: start over.
    if (/^err (other-diary|past-end)/.test(event.data)) {
      events.close();
      view.diary = null;
      notice('The server now keeps another copy of the diary; showing it afresh.');
      start();
    }
  });
  events.onerror = () => {
    if (events.readyState === EventSource.CLOSED) {
      // Refused outright (logged out, or the server said no): look why, then try again.
      setStatus('reconnecting…', true);
      setTimeout(() => start(), 2000);
    } else {
      setStatus('reconnecting…', true);
    }
  };
}

// ---- writing, with an outbox that survives a dropped connection ------

function outbox() {
  try {
    return JSON.parse(localStorage.getItem(OUTBOX_KEY) || '[]');
  } catch {
    return [];
  }
}

function saveOutbox(items) {
  localStorage.setItem(OUTBOX_KEY, JSON.stringify(items));
  const n = items.length;
  $('#waiting').textContent = n
    ? `${n} ${n === 1 ? 'entry' : 'entries'} kept in this browser, sent when the server is back`
    : '';
}

// Each item keeps its tag from the moment it is typed, so sending it
// again after a dropped connection (or from another tab) stores it once.
function enqueue(texts) {
  const items = outbox();
  for (const text of texts) items.push({ tag: newTag(), text });
  saveOutbox(items);
  renderTimeline();
  sendOutbox();
}

async function sendOutbox() {
  if (view.sending) return;
  view.sending = true;
  try {
    for (;;) {
      const items = outbox();
      if (!items.length) break;
      const item = items[0];
      let reply;
      try {
        reply = replyLines(await call(`/id ${item.tag} /write ${item.text}`))[0] || '';
      } catch (error) {
        if (error instanceof LoggedOut) throw error;
        view.online = false;
        setStatus('offline', true);
        setTimeout(sendOutbox, view.retryMs);
        view.retryMs = Math.min(view.retryMs * 2, 10000);
        return;
      }
      view.online = true;
      view.retryMs = 1000;
      const rest = outbox().filter((other) => other.tag !== item.tag);
      if (reply.startsWith('err io')) {
        // The server cannot store now; the line stays and is sent again.
        notice(`Not stored yet: ${reply}`);
        setTimeout(sendOutbox, 5000);
        return;
      }
      saveOutbox(rest);
      if (reply.startsWith('err ')) {
        notice(`Not stored: “${item.text.slice(0, 60)}”: ${reply}`);
      } else {
        const match = /^ok (\d+) (\S+)/.exec(reply);
        if (match && !view.entries.has(Number(match[1]))) {
          apply({ id: Number(match[1]), time: match[2], text: item.text, attrs: {} });
        }
      }
      renderTimeline();
    }
  } catch (error) {
    if (error instanceof LoggedOut) loggedOut(error.message);
  } finally {
    view.sending = false;
  }
}

function submitText() {
  const box = $('#text');
  const text = box.value;
  if (!text.trim()) return;
  // One line is one entry, as everywhere; a paragraph is one entry.
  const texts = $('#paragraph').checked
    ? [text.replace(/\s+$/, '')]
    : text.split(/\r?\n/).filter((line) => line.trim() !== '');
  box.value = '';
  enqueue(texts);
}

// ---- amending and deleting -------------------------------------------

function startEdit(node, entry) {
  const textNode = node.querySelector('.text');
  const box = document.createElement('textarea');
  box.value = entry.text;
  box.rows = Math.min(8, entry.text.split('\n').length + 1);
  const save = document.createElement('button');
  save.type = 'button';
  save.textContent = 'save';
  const cancel = document.createElement('button');
  cancel.type = 'button';
  cancel.textContent = 'cancel';
  const editor = document.createElement('div');
  editor.className = 'editor';
  editor.append(box, save, ' ', cancel);
  textNode.replaceWith(editor);
  box.focus();
  cancel.addEventListener('click', () => editor.replaceWith(textNode));
  save.addEventListener('click', async () => {
    const text = box.value.replace(/\s+$/, '');
    if (!text || text === entry.text) {
      editor.replaceWith(textNode);
      return;
    }
    try {
      const reply = await tagged(`/amend ${entry.id} ${text}`);
      if (!reply.startsWith('ok ')) throw new Error(reply);
      entry.text = text;
      entry.attrs.edited = reply.split(' ')[1];
      notice('');
      renderTimeline();
    } catch (error) {
      failed(error, 'Not amended');
    }
  });
}

async function remove(entry) {
  if (!confirm(`Delete entry #${entry.id}? It stays in the file's history.`)) return;
  try {
    const reply = await tagged(`/delete ${entry.id}`);
    if (!reply.startsWith('ok ')) throw new Error(reply);
    view.entries.delete(entry.id);
    renderTimeline();
  } catch (error) {
    failed(error, 'Not deleted');
  }
}

function failed(error, what) {
  if (error instanceof LoggedOut) loggedOut(error.message);
  else notice(`${what}: ${error.message}`);
}

// ---- search ----------------------------------------------------------

// Local midnight of a yyyy-mm-dd day, in RFC 3339 with this clock's offset.
function localMidnight(day, plusDays) {
  const [y, m, d] = day.split('-').map(Number);
  const date = new Date(y, m - 1, d + plusDays);
  const pad = (n) => String(Math.abs(n)).padStart(2, '0');
  const offset = -date.getTimezoneOffset();
  const sign = offset >= 0 ? '+' : '-';
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T00:00:00${sign}${pad(Math.trunc(offset / 60))}:${pad(offset % 60)}`;
}

async function search(event) {
  event.preventDefault();
  const words = $('#search-words').value.trim().split(/\s+/).filter(Boolean);
  const since = $('#search-since').value;
  const until = $('#search-until').value;
  let query = '/past 200 -i';
  if (since) query += ` since ${localMidnight(since, 0)}`;
  if (until) query += ` until ${localMidnight(until, 1)}`;
  for (const word of words.filter((w) => w.startsWith('#') && w.length > 1)) query += ` tag ${word.slice(1)}`;
  const plain = words.filter((w) => !w.startsWith('#'));
  if (plain.length) query += ` grep ${plain.join('\t')}`;
  try {
    const lines = replyLines(await call(query));
    const found = [];
    for (const line of lines) {
      if (line.startsWith('err ')) throw new Error(line);
      const entry = parseEntry(line);
      if (entry) found.push(entry);
    }
    view.searching = true;
    const results = $('#results');
    results.textContent = found.length
      ? `${found.length} ${found.length === 1 ? 'entry' : 'entries'} found${found.length === 200 ? ' (the newest 200)' : ''}`
      : 'nothing found';
    results.hidden = false;
    $('#older').hidden = true;
    render(found);
  } catch (error) {
    failed(error, 'Search failed');
  }
}

function clearSearch() {
  view.searching = false;
  $('#results').hidden = true;
  $('#search-words').value = '';
  $('#search-since').value = '';
  $('#search-until').value = '';
  renderTimeline();
}

// ---- logging in and out ----------------------------------------------

function loggedOut(message) {
  if (view.events) view.events.close();
  view.events = null;
  setStatus('logged out', true);
  notice(`${message.trim()} — lines you type are kept in this browser until then.`);
}

async function login(token) {
  const response = await post('/api/login', token);
  history.replaceState(null, '', '/');
  if (!response.ok) {
    notice(`Not logged in: ${(await response.text()).trim()}`);
    return false;
  }
  return true;
}

async function start() {
  try {
    await loadNewest();
    notice('');
    follow();
  } catch (error) {
    if (error instanceof LoggedOut) {
      loggedOut(error.message);
    } else {
      setStatus('offline', true);
      setTimeout(start, 2000);
    }
  }
}

async function main() {
  saveOutbox(outbox());
  $('#compose').addEventListener('submit', (event) => {
    event.preventDefault();
    submitText();
  });
  $('#text').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.isComposing && (!$('#paragraph').checked || event.ctrlKey || event.metaKey) && !event.shiftKey) {
      event.preventDefault();
      submitText();
    }
  });
  $('#older').addEventListener('click', () => loadOlder().catch((error) => failed(error, 'Not loaded')));
  $('#search').addEventListener('submit', search);
  $('#search-clear').addEventListener('click', clearSearch);
  $('#search-toggle').addEventListener('click', () => {
    const form = $('#search');
    form.hidden = !form.hidden;
    $('#search-toggle').setAttribute('aria-expanded', String(!form.hidden));
    if (form.hidden) clearSearch();
    else $('#search-words').focus();
  });
  $('#logout').addEventListener('click', async () => {
    await post('/api/logout', '').catch(() => {});
    loggedOut('Logged out: run `diary web-login` on the server’s machine to log in again');
  });
  window.addEventListener('online', () => sendOutbox());
  if (location.pathname === '/login' && location.hash.length > 1) {
    const token = location.hash.slice(1);
    if (!(await login(token))) return;
  }
  await start();
}

main();
