// Syntax errors of JavaScript as the sandbox will see it (abi/ABI.md,
// JavaScript guests): a function is a body receiving `input`; a policy or
// kernel is an ES module when a line starts with import or export, else a
// script. acorn parses; the line and column are the source's own.
import { parse } from "acorn";

const isModule = (code) => /^\s*(import|export)\b/m.test(code);

// check returns null, or {line, column, message} (1-based line and column).
export function check(kind, code) {
  let src = code;
  let shift = 0;
  let sourceType = "script";
  if (kind === "function") {
    // The body runs as new Function('input', code), async so await works.
    src = "(async function (input) {\n" + code + "\n})";
    shift = 1;
  } else if (isModule(code)) {
    sourceType = "module";
  }
  try {
    parse(src, { ecmaVersion: "latest", sourceType, locations: true });
    return null;
  } catch (e) {
    if (!e.loc) throw e;
    const message = e.message.replace(/\s*\(\d+:\d+\)$/, "");
    return { line: e.loc.line - shift, column: e.loc.column + 1, message };
  }
}
