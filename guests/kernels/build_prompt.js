// build_prompt (seed §4.1): compiles prompt_variant VARIANT_ID for the
// tenant it runs for into a prompt_build — the exact (id, seq, curr_hash)
// of every block applied, the compiled prompt and compiled_hash, the
// BLAKE3 of its canonical form (prompt.js). The same inputs give the same
// hash, and a hash already built is not built again.
//   env VARIANT_ID  the prompt_variant
globalThis.default = async function main(ctx) {
  if (!ctx.env.TENANT) throw new Error('build_prompt: env TENANT (the tenant it works for) is required');
  const { sql, env } = ctx;
  if (!env.VARIANT_ID) throw new Error('build_prompt: env VARIANT_ID (the prompt_variant) is required');
  try {
    const b = await build(ctx, env.TENANT, await readVariant(sql, env.VARIANT_ID));
    const { compiled, ...out } = b;
    return Object.assign(out, { system_chars: compiled.system.length });
  } catch (e) {
    if (e.code) throw new Error(`build_prompt: ${e.code}: ${e.message}`);
    throw e;
  }
};
