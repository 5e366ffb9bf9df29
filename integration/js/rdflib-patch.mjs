// Patches an RDF document with rdflib.js's UpdateManager, the way Solid apps built on rdflib do:
// load the document with the Fetcher (which learns from the answer's headers that the document
// is editable and how), then ask the UpdateManager to insert one triple.
//
//   node rdflib-patch.mjs <document URL> <API key> <value>
//
// Prints {"ok":true} (or the error) on stdout.
import * as $rdf from 'rdflib';

const [docUrl, key, value] = process.argv.slice(2);
const withKey = (input, init = {}) => {
  const headers = new Headers(init.headers || {});
  headers.set('authorization', `Bearer ${key}`);
  return fetch(input, { ...init, headers });
};
const store = $rdf.graph();
const fetcher = new $rdf.Fetcher(store, { fetch: withKey });
const updater = new $rdf.UpdateManager(store);
const doc = $rdf.sym(docUrl);
try {
  await fetcher.load(doc);
  const editable = updater.editable(docUrl, store);
  await updater.update([], [$rdf.st($rdf.sym(`${docUrl}#a`), $rdf.sym('http://e/q'), $rdf.lit(value), doc)]);
  console.log(JSON.stringify({ ok: true, editable }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e && e.message || e) }));
  process.exit(1);
}
