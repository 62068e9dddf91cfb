// files through the npm novita-sandbox SDK: read/write/list/watchDir, errors, token and signed URLs.
import assert from 'node:assert/strict'
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { AuthenticationError, FileNotFoundError, SandboxError, TimeoutError } from 'novita-sandbox'
import { TOKEN, debugSandbox, startEnvd, tokenSandbox, waitFor, workDir } from './harness.mjs'

let envd
let sbx
before(async () => {
  envd = await startEnvd()
  sbx = await debugSandbox(envd)
})
after(async () => {
  await envd?.stop()
})

describe('files', () => {
  test('write and read text, bytes, blob, stream', async () => {
    const dir = workDir(envd, 'rw')
    const info = await sbx.files.write(join(dir, 'a.txt'), 'héllo js\n')
    assert.deepEqual({ name: info.name, path: info.path, type: info.type }, { name: 'a.txt', path: join(dir, 'a.txt'), type: 'file' })
    assert.equal(await sbx.files.read(join(dir, 'a.txt')), 'héllo js\n')
    assert.equal(statSync(join(dir, 'a.txt')).uid, 1000)

    const bin = new Uint8Array(256 * 40).map((_, i) => i % 256)
    await sbx.files.write(join(dir, 'b.bin'), bin.buffer)
    assert.deepEqual(await sbx.files.read(join(dir, 'b.bin'), { format: 'bytes' }), bin)
    const blob = await sbx.files.read(join(dir, 'b.bin'), { format: 'blob' })
    assert.equal(blob.size, bin.length)
    const stream = await sbx.files.read(join(dir, 'b.bin'), { format: 'stream' })
    const chunks = []
    for await (const c of stream) chunks.push(c)
    assert.deepEqual(new Uint8Array(Buffer.concat(chunks)), bin)
  })

  test('write many files at once, relative paths', async () => {
    const dir = workDir(envd, 'many')
    const rel = dir.slice(envd.home.length + 1)
    const infos = await sbx.files.write([
      { path: join(dir, 'x', 'one.txt'), data: '1' },
      { path: `${rel}/two.txt`, data: new Blob(['2']) },
    ])
    assert.deepEqual(infos.map((i) => i.path), [join(dir, 'x', 'one.txt'), join(dir, 'two.txt')])
    assert.equal(readFileSync(join(dir, 'x', 'one.txt'), 'utf8'), '1')
    assert.equal(readFileSync(join(dir, 'two.txt'), 'utf8'), '2')
  })

  test('list with depth, exists, getInfo', async () => {
    const dir = workDir(envd, 'list')
    mkdirSync(join(dir, 'd', 'e'), { recursive: true })
    writeFileSync(join(dir, 'f.txt'), 'abc')
    writeFileSync(join(dir, 'd', 'g.txt'), 'g')
    symlinkSync(join(dir, 'f.txt'), join(dir, 'link'))
    const one = await sbx.files.list(dir)
    assert.deepEqual(one.map((e) => e.name).sort(), ['d', 'f.txt', 'link'])
    const link = one.find((e) => e.name === 'link')
    assert.equal(link.type, 'file')
    assert.equal(link.symlinkTarget, join(dir, 'f.txt'))
    const two = await sbx.files.list(dir, { depth: 2 })
    assert.deepEqual(two.map((e) => e.path).sort(), [join(dir, 'd'), join(dir, 'd', 'e'), join(dir, 'd', 'g.txt'), join(dir, 'f.txt'), join(dir, 'link')])
    assert.equal(await sbx.files.exists(join(dir, 'f.txt')), true)
    assert.equal(await sbx.files.exists(join(dir, 'nope')), false)
    const info = await sbx.files.getInfo(join(dir, 'f.txt'))
    assert.equal(info.type, 'file')
    assert.equal(info.size, 3)
    assert.ok(info.modifiedTime instanceof Date)
    assert.equal((await sbx.files.getInfo(dir)).type, 'dir')
  })

  test('makeDir true then false, rename, remove', async () => {
    const dir = workDir(envd, 'mk')
    assert.equal(await sbx.files.makeDir(join(dir, 'n', 'm')), true)
    assert.equal(await sbx.files.makeDir(join(dir, 'n', 'm')), false)
    const moved = await sbx.files.rename(join(dir, 'n'), join(dir, 'n2'))
    assert.equal(moved.path, join(dir, 'n2'))
    assert.equal(moved.type, 'dir')
    await sbx.files.remove(join(dir, 'n2'))
    assert.equal(existsSync(join(dir, 'n2')), false)
  })

  test('errors: missing file, directory read, permission', async () => {
    const dir = workDir(envd, 'err')
    await assert.rejects(sbx.files.read(join(dir, 'missing')), FileNotFoundError)
    await assert.rejects(sbx.files.getInfo(join(dir, 'missing')), FileNotFoundError)
    await assert.rejects(sbx.files.list(join(dir, 'missing')), FileNotFoundError)
    await assert.rejects(sbx.files.read(dir), SandboxError)
    writeFileSync(join(dir, 'secret'), 'root only')
    chmodSync(join(dir, 'secret'), 0o600)
    await assert.rejects(sbx.files.read(join(dir, 'secret')), SandboxError)
    assert.equal(await sbx.files.read(join(dir, 'secret'), { user: 'root' }), 'root only')
  })

  test('watchDir streams events and ends on its timeout', async () => {
    const dir = workDir(envd, 'watch')
    const events = []
    const h = await sbx.files.watchDir(dir, (e) => events.push(e), { timeoutMs: 30_000 })
    await sbx.files.write(join(dir, 'w.txt'), 'w')
    await waitFor(() => events.some((e) => e.name === 'w.txt' && e.type === 'create'), { what: `create event in ${JSON.stringify(events)}` })
    await sbx.files.remove(join(dir, 'w.txt'))
    await waitFor(() => events.some((e) => e.name === 'w.txt' && e.type === 'remove'), { what: 'remove event' })
    await h.stop()

    let exitErr = 'not called'
    await sbx.files.watchDir(dir, () => {}, { timeoutMs: 1000, onExit: (e) => (exitErr = e) })
    await waitFor(() => exitErr !== 'not called', { timeoutMs: 10_000, what: 'onExit after timeout' })
    assert.ok(exitErr instanceof TimeoutError, String(exitErr))
  })

  test('watchDir recursive', async () => {
    const dir = workDir(envd, 'watchr')
    mkdirSync(join(dir, 'sub'))
    chownSync(join(dir, 'sub'), 1000, 1000)
    const events = []
    const h = await sbx.files.watchDir(dir, (e) => events.push(e), { recursive: true, timeoutMs: 30_000 })
    writeFileSync(join(dir, 'sub', 'deep.txt'), 'd')
    await waitFor(() => events.some((e) => e.name === 'sub/deep.txt' && e.type === 'create'), { what: `sub/deep.txt in ${JSON.stringify(events)}` })
    await h.stop()
  })
})

describe('access token', () => {
  let tenvd
  before(async () => {
    tenvd = await startEnvd({ token: TOKEN })
  })
  after(async () => {
    await tenvd?.stop()
  })

  test('with the token everything works; signed URLs work without it', async () => {
    const t = tokenSandbox(tenvd, TOKEN)
    const dir = workDir(tenvd, 'tok')
    assert.equal((await t.commands.run('echo ok')).stdout, 'ok\n')
    await t.files.write(join(dir, 's.txt'), 'signed')
    const url = await t.downloadUrl(join(dir, 's.txt'))
    assert.match(url, /signature=v1_/)
    const r = await fetch(url)
    assert.equal(r.status, 200)
    assert.equal(await r.text(), 'signed')
    const up = await t.uploadUrl(join(dir, 'up.txt'))
    const form = new FormData()
    form.append('file', new Blob(['via upload url']), 'up.txt')
    assert.equal((await fetch(up, { method: 'POST', body: form })).status, 200)
    assert.equal(readFileSync(join(dir, 'up.txt'), 'utf8'), 'via upload url')
  })

  test('without the token: AuthenticationError', async () => {
    const bad = tokenSandbox(tenvd, 'wrong')
    const dir = workDir(tenvd, 'bad')
    await assert.rejects(bad.commands.run('true'), AuthenticationError)
    await assert.rejects(bad.files.read(join(dir, 'x')), AuthenticationError)
    await assert.rejects(bad.files.list(dir), AuthenticationError)
    await assert.rejects(bad.files.watchDir(dir, () => {}), AuthenticationError)
  })
})
