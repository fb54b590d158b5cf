// The official AsyncAPI tools as judges of generated documents:
//   node judge.mjs validate DOC.json          -> {"errors": [...], "warnings": [...]}, exit 1 on errors
//   node judge.mjs diff OLD.json NEW.json     -> {"breaking": [...], "nonBreaking": [...], "unclassified": [...]}
import { Parser, fromFile, DiagnosticSeverity } from '@asyncapi/parser';
import { AvroSchemaParser } from '@asyncapi/avro-schema-parser';
import { diff } from '@asyncapi/diff';

const [, , command, first, second] = process.argv;
const parser = new Parser();
parser.registerSchemaParser(AvroSchemaParser());

async function parse(path) {
  const { document, diagnostics } = await fromFile(parser, path).parse();
  const show = (d) => ({ code: d.code, message: d.message, path: d.path.join('/') });
  return {
    document,
    errors: diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error).map(show),
    warnings: diagnostics.filter((d) => d.severity === DiagnosticSeverity.Warning).map(show),
  };
}

if (command === 'validate') {
  const { errors, warnings } = await parse(first);
  console.log(JSON.stringify({ errors, warnings }));
  process.exit(errors.length > 0 ? 1 : 0);
} else if (command === 'diff') {
  const [a, b] = [await parse(first), await parse(second)];
  for (const p of [a, b]) {
    if (!p.document) {
      console.log(JSON.stringify({ errors: p.errors }));
      process.exit(1);
    }
  }
  const output = diff(a.document.json(), b.document.json());
  console.log(JSON.stringify({
    breaking: output.breaking(),
    nonBreaking: output.nonBreaking(),
    unclassified: output.unclassified(),
  }));
} else {
  console.error('usage: judge.mjs validate DOC | diff OLD NEW');
  process.exit(2);
}
