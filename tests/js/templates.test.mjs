// Templates (issue 6) with the official novita-sandbox JS SDK: `Template.build()` (steps, a COPY
// upload, status polling) with a start command and a readiness check, then `Sandbox.create()` from
// it: the server the start command launched answers at once (it runs in the template's memory
// snapshot), the copied file and the environment are there.
import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { Sandbox, Template, waitForURL } from 'novita-sandbox'
import { startServer } from './server_harness.mjs'

let server
let opts
let ctx

before(async () => {
  server = await startServer()
  opts = { apiUrl: server.url, sandboxUrl: server.url, apiKey: server.key, requestTimeoutMs: 30_000 }
  ctx = mkdtempSync(join(tmpdir(), 'arbor-js-tpl-'))
  writeFileSync(join(ctx, 'index.html'), 'served by a template\n')
})

after(async () => {
  await server?.teardown()
  if (ctx) rmSync(ctx, { recursive: true, force: true })
})

test('Template.build with a start command, then Sandbox.create from it', async () => {
  const name = `js-${Math.random().toString(36).slice(2, 10)}`
  const template = Template({ fileContextPath: ctx })
    .fromTemplate('base')
    .runCmd('mkdir -p /srv/www', { user: 'root' })
    .copy('index.html', '/srv/www/index.html', { user: 'root' })
    .setEnvs({ SITE: 'arbor' })
    .setStartCmd('cd /srv/www && python3 -m http.server 8000', waitForURL('http://127.0.0.1:8000/'))
  const logs = []
  const info = await Template.build(template, {
    alias: name,
    apiUrl: server.url,
    apiKey: server.key,
    onBuildLogs: (entry) => logs.push(entry.message),
  })
  assert.ok(info.templateId, JSON.stringify(info))
  assert.ok(logs.some((m) => m.includes('ready')), logs.join('\n'))

  const sbx = await Sandbox.create(name, { ...opts, timeoutMs: 60_000 })
  try {
    const page = await sbx.commands.run('curl -sf http://127.0.0.1:8000/index.html')
    assert.equal(page.stdout, 'served by a template\n')
    const env = await sbx.commands.run('echo $SITE')
    assert.equal(env.stdout.trim(), 'arbor')
  } finally {
    await sbx.kill()
  }
  const res = await fetch(`${server.url}/templates/${name}`, { method: 'DELETE', headers: { 'X-API-KEY': server.key } })
  assert.equal(res.status, 204)
})
