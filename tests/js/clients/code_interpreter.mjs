// A client of the code interpreter with the official JS SDK and its defaults only: NOVITA_DOMAIN,
// NOVITA_API_KEY and NODE_EXTRA_CA_CERTS come from the environment. Not a test of its own (node --test
// does not collect it): tests/python/test_code_interpreter.py runs it in a mount namespace whose
// resolver is Arbor's DNS, and checks the JSON it prints.
import { Sandbox } from 'novita-sandbox/code-interpreter'

const out = {}
const sbx = await Sandbox.create({ timeoutMs: 120_000 })
try {
  await sbx.runCode('x = 40')
  out.python = (await sbx.runCode('x + 2')).text
  const lines = []
  await sbx.runCode("console.log('from js')", { language: 'js', onStdout: (m) => lines.push(m.line) })
  out.jsStdout = lines
  out.ts = (await sbx.runCode('const n: number = 7; n * 6', { language: 'ts' })).text
  const ctx = await sbx.createCodeContext({ cwd: '/tmp', language: 'python' })
  out.cwd = (await sbx.runCode('import os; os.getcwd()', { context: ctx })).text
  out.listed = (await sbx.listCodeContexts()).some((c) => c.id === ctx.id)
  await sbx.restartCodeContext(ctx)
  await sbx.removeCodeContext(ctx)
  out.removed = !(await sbx.listCodeContexts()).some((c) => c.id === ctx.id)
  const err = (await sbx.runCode('1/0')).error
  out.error = [err.name, err.value]
  const plot = await sbx.runCode('import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()')
  out.png = Buffer.from(plot.results[0].png, 'base64').subarray(1, 4).toString()
} finally {
  await sbx.kill()
}
console.log('OUT ' + JSON.stringify(out))
