// A user function (runtime quickjs, tier function: pure): it reads
// {"a": number, "b": number} and returns {"sum": a + b}. The JavaScript twin
// of guests/examples/go-function, doing the same work: a BLAKE3 of the
// input, a log line with the run's clock and a seeded nonce, the sum.
//
//   logline publish function.js --kind function --name add
//   logline run <id> --input '{"a": 1, "b": 2}'
//
// The file is a function body (as the seed's new Function('input', code)):
// `input` is the run's input, and what it returns (or resolves to) is the
// output, as JSON.
/// <reference path="../logline.d.ts" />

const { crypto } = logline;
const digest = crypto.hex(crypto.blake3(JSON.stringify(input)));
console.log(`js-function at ${logline.now()}: input blake3 ${digest}, nonce ${crypto.hex(crypto.randomBytes(8))}`);

if (input === null || typeof input.a !== 'number' || typeof input.b !== 'number') {
  throw new TypeError('bad input: want {"a": number, "b": number}');
}
return { sum: input.a + input.b };
