// `arbor server` driven by the official novita-sandbox JS SDK: create, commands and files through the
// proxy, list with metadata filters and pages, timeout, connect, kill, errors.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { Sandbox, AuthenticationError, NotFoundError } from 'novita-sandbox'
import { startServer } from './server_harness.mjs'

let server
let opts

before(async () => {
  server = await startServer()
  opts = { apiUrl: server.url, sandboxUrl: server.url, apiKey: server.key, requestTimeoutMs: 30_000 }
})

after(async () => {
  await server?.teardown()
})

test('create, run a command, write and read a file, kill', async () => {
  const sbx = await Sandbox.create({ ...opts, timeoutMs: 120_000, metadata: { suite: 'js' }, envs: { GREETING: 'hi' } })
  try {
    assert.equal(await sbx.isRunning(), true)
    const out = await sbx.commands.run('echo $GREETING from $(whoami)')
    assert.equal(out.stdout, 'hi from user\n')
    await sbx.files.write('/home/user/js.txt', 'written by js\n')
    assert.equal(await sbx.files.read('/home/user/js.txt'), 'written by js\n')
    const again = await Sandbox.connect(sbx.sandboxId, opts)
    assert.equal((await again.commands.run('cat /home/user/js.txt')).stdout, 'written by js\n')
    const info = await sbx.getInfo()
    assert.equal(info.sandboxId, sbx.sandboxId)
    assert.deepEqual(info.metadata, { suite: 'js' })
  } finally {
    await sbx.kill()
  }
  assert.equal(await Sandbox.kill(sbx.sandboxId, opts), false)
})

test('list by metadata with tricky characters, one item per page', async () => {
  const tag = `js-${Date.now()}`
  const made = []
  for (let i = 0; i < 3; i++) {
    made.push(await Sandbox.create({ ...opts, timeoutMs: 120_000, metadata: { tag, 'a b': 'c&d=e' } }))
  }
  try {
    const pages = Sandbox.list({ ...opts, query: { metadata: { tag, 'a b': 'c&d=e' } }, limit: 1 })
    const seen = []
    while (pages.hasNext) {
      const items = await pages.nextItems()
      assert.ok(items.length <= 1)
      seen.push(...items.map((s) => s.sandboxId))
    }
    assert.deepEqual(seen.sort(), made.map((s) => s.sandboxId).sort())
  } finally {
    for (const s of made) await s.kill()
  }
})

test('a short timeout kills the sandbox; setTimeout extends another', async () => {
  const short = await Sandbox.create({ ...opts, timeoutMs: 2_000 })
  const kept = await Sandbox.create({ ...opts, timeoutMs: 2_000 })
  try {
    await kept.setTimeout(60_000)
    await new Promise((r) => setTimeout(r, 3_500))
    assert.equal(await short.isRunning(), false)
    assert.equal(await kept.isRunning(), true)
  } finally {
    await kept.kill()
  }
})

test('a wrong key and an unknown sandbox raise the SDK errors', async () => {
  await assert.rejects(Sandbox.create({ ...opts, apiKey: 'wrong-key' }), AuthenticationError)
  await assert.rejects(Sandbox.connect('doesnotexist000000000', opts), NotFoundError)
})
