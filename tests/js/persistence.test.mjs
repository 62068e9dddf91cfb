// Pause/resume, clone and snapshots (issue 5) with the official novita-sandbox JS SDK: a counting shell
// loop (its count lives in a shell variable: a restarted loop would start again from 1 with another
// pid) and a file survive betaPause + connect, appear in two clones that then diverge, and in a
// sandbox started from a snapshot; the snapshot cannot be deleted while that sandbox runs.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { Sandbox, SandboxNotFoundError } from 'novita-sandbox'
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

const LOOP = 'echo $$ > /home/user/loop.pid; i=0; while :; do i=$((i+1)); echo $i > /home/user/loop.n; sleep 0.1; done'
// Reads the loop's pid (empty if it is not running) and its count twice, 0.4 s apart; retries the
// read that races the loop's truncating write.
const READ_LOOP = `n() { v=; while [ -z "$v" ]; do v=$(cat /home/user/loop.n); done; echo $v; }
pid=$(cat /home/user/loop.pid); [ -d /proc/$pid ] || pid=; a=$(n); sleep 0.4; echo "$pid $a $(n)"`

async function startLoop(sbx) {
  await sbx.commands.run(`setsid sh -c '${LOOP}' </dev/null >/dev/null 2>&1 &`)
  for (;;) {
    const state = await loopState(sbx)
    if (state.first >= 3) return state
    await new Promise((r) => setTimeout(r, 100))
  }
}

async function loopState(sbx) {
  const [pid, first, second] = (await sbx.commands.run(READ_LOOP)).stdout.trim().split(' ')
  return { pid, first: Number(first), second: Number(second) }
}

// The same loop process, counting on from where it was.
async function assertLoopKept(sbx, before) {
  const now = await loopState(sbx)
  assert.equal(now.pid, before.pid, 'the loop is another process')
  assert.ok(now.first >= before.second, `the loop restarted: ${now.first} after ${before.second}`)
  assert.ok(now.second > now.first, 'the loop stopped counting')
  return now
}

async function stateOf(sandboxId) {
  return (await Sandbox.getInfo(sandboxId, opts)).state
}

test('betaPause and connect keep a running process and a file', async () => {
  const sbx = await Sandbox.create({ ...opts, timeoutMs: 120_000 })
  try {
    await sbx.files.write('/home/user/kept.txt', 'from before the pause\n')
    let loop = await startLoop(sbx)

    assert.equal(await sbx.betaPause(), true)
    assert.equal(await stateOf(sbx.sandboxId), 'paused')
    assert.equal(await sbx.betaPause(), false, 'a second pause answers 409: already paused')
    const paused = await Sandbox.list({ ...opts, query: { state: ['paused'] } }).nextItems()
    assert.ok(paused.some((s) => s.sandboxId === sbx.sandboxId))

    assert.equal(await sbx.connect(), sbx)
    assert.equal(await stateOf(sbx.sandboxId), 'running')
    loop = await assertLoopKept(sbx, loop)
    assert.equal(await sbx.files.read('/home/user/kept.txt'), 'from before the pause\n')

    await Sandbox.betaPause(sbx.sandboxId, opts)
    const again = await Sandbox.connect(sbx.sandboxId, { ...opts, timeoutMs: 60_000 })
    await assertLoopKept(again, loop)
  } finally {
    await sbx.kill()
  }
  await assert.rejects(Sandbox.connect(sbx.sandboxId, opts), SandboxNotFoundError)
})

test('two clones have the origin\'s process and files, then diverge', async () => {
  const origin = await Sandbox.create({ ...opts, timeoutMs: 120_000 })
  const clones = []
  try {
    await origin.files.write('/home/user/base.txt', 'baseline\n')
    const loop = await startLoop(origin)

    const result = await Sandbox.clone(origin.sandboxId, { ...opts, count: 2, strict: false, timeoutMs: 100_000 })
    clones.push(...result.sandboxes)
    assert.equal(result.count, 2)
    assert.equal(result.sandboxes.length, 2)
    assert.ok(result.snapshotTemplateId)
    assert.equal(await stateOf(origin.sandboxId), 'running')

    for (const [i, c] of clones.entries()) {
      assert.notEqual(c.sandboxId, origin.sandboxId)
      assert.equal(await stateOf(c.sandboxId), 'running')
      assert.equal(await c.files.read('/home/user/base.txt'), 'baseline\n')
      await assertLoopKept(c, loop)
      await c.files.write('/home/user/branch.txt', `clone ${i}\n`)
    }
    for (const [i, c] of clones.entries()) {
      assert.equal(await c.files.read('/home/user/branch.txt'), `clone ${i}\n`)
    }
    assert.equal(await origin.files.exists('/home/user/branch.txt'), false)
    await assertLoopKept(origin, loop)
  } finally {
    for (const c of clones) await c.kill()
    await origin.kill()
  }
})

test('a snapshot starts a sandbox with the origin\'s state; it is deleted once unused', async () => {
  const origin = await Sandbox.create({ ...opts, timeoutMs: 120_000 })
  let child
  try {
    await origin.files.write('/home/user/status.txt', 'ready\n')
    const loop = await startLoop(origin)

    const snap = await origin.createSnapshot()
    assert.ok(snap.snapshotId)
    assert.equal(await stateOf(origin.sandboxId), 'running')
    await assertLoopKept(origin, loop)

    const pages = origin.listSnapshots({ limit: 1 })
    const listed = []
    while (pages.hasNext) listed.push(...(await pages.nextItems()).map((s) => s.snapshotId))
    assert.deepEqual(listed, [snap.snapshotId])
    const all = await Sandbox.listSnapshots(opts).nextItems()
    assert.ok(all.some((s) => s.snapshotId === snap.snapshotId))

    child = await Sandbox.create(snap.snapshotId, { ...opts, timeoutMs: 120_000 })
    assert.notEqual(child.sandboxId, origin.sandboxId)
    assert.equal((await child.commands.run('cat /home/user/status.txt')).stdout, 'ready\n')
    await assertLoopKept(child, loop)

    await assert.rejects(Sandbox.deleteSnapshot(snap.snapshotId, opts))
    await child.kill()
    child = undefined
    assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId, opts), true)
    assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId, opts), false)
  } finally {
    await child?.kill()
    await origin.kill()
  }
})
