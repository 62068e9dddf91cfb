// commands and pty through the npm novita-sandbox SDK (connect-web: strict about stream framing).
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { CommandExitError, NotFoundError, TimeoutError } from 'novita-sandbox'
import { debugSandbox, startEnvd, waitFor, workDir } from './harness.mjs'

let envd
let sbx
before(async () => {
  envd = await startEnvd()
  sbx = await debugSandbox(envd)
})
after(async () => {
  await envd?.stop()
})

describe('commands', () => {
  test('run streams stdout and stderr to callbacks', async () => {
    const out = []
    const err = []
    const r = await sbx.commands.run('echo one; echo two >&2; sleep 0.2; echo three', {
      onStdout: (d) => out.push(d),
      onStderr: (d) => err.push(d),
    })
    assert.equal(r.exitCode, 0)
    assert.equal(r.stdout, 'one\nthree\n')
    assert.equal(r.stderr, 'two\n')
    assert.equal(out.join(''), 'one\nthree\n')
    assert.equal(err.join(''), 'two\n')
  })

  test('large output survives framing', async () => {
    const r = await sbx.commands.run("head -c 2000000 /dev/zero | tr '\\0' y", { timeoutMs: 30_000 })
    assert.equal(r.stdout.length, 2_000_000)
  })

  test('non-zero exit rejects with CommandExitError', async () => {
    await assert.rejects(sbx.commands.run('echo so-far; exit 5'), (e) => {
      assert.ok(e instanceof CommandExitError, String(e))
      assert.equal(e.exitCode, 5)
      assert.equal(e.stdout, 'so-far\n')
      return true
    })
  })

  test('envs, cwd and user', async () => {
    const dir = workDir(envd, 'cwd')
    const r = await sbx.commands.run('echo "$A|$(pwd)|$(id -u)"', { envs: { A: 'js' }, cwd: dir })
    assert.equal(r.stdout, `js|${dir}|1000\n`)
    const root = await sbx.commands.run('id -u', { user: 'root' })
    assert.equal(root.stdout, '0\n')
  })

  test('background, list, kill', async () => {
    const h = await sbx.commands.run('sleep 30', { background: true })
    assert.ok(h.pid > 0)
    const listed = await sbx.commands.list()
    const p = listed.find((x) => x.pid === h.pid)
    assert.ok(p, 'background process not listed')
    assert.deepEqual(p.args, ['-l', '-c', 'sleep 30'])
    assert.equal(await h.kill(), true)
    await assert.rejects(h.wait(), CommandExitError)
    await waitFor(async () => !(await sbx.commands.list()).some((x) => x.pid === h.pid), { what: 'process gone' })
  })

  test('kill of an unknown pid is false', async () => {
    assert.equal(await sbx.commands.kill(99_999_999), false)
  })

  test('stdin: sendStdin then closeStdin', async () => {
    const h = await sbx.commands.run('cat; echo closed', { background: true, stdin: true })
    await sbx.commands.sendStdin(h.pid, 'to cat\n')
    await sbx.commands.sendStdin(h.pid, new TextEncoder().encode('bytes too\n'))
    await sbx.commands.closeStdin(h.pid)
    const r = await h.wait()
    assert.equal(r.stdout, 'to cat\nbytes too\nclosed\n')
  })

  test('connect to a running command by pid', async () => {
    const h = await sbx.commands.run('sleep 0.5; echo from-later', { background: true })
    await h.disconnect()
    const out = []
    const h2 = await sbx.commands.connect(h.pid, { onStdout: (d) => out.push(d) })
    const r = await h2.wait()
    assert.equal(r.exitCode, 0)
    assert.equal(out.join(''), 'from-later\n')
  })

  test('connect to an unknown pid', async () => {
    await assert.rejects(sbx.commands.connect(99_999_999), NotFoundError)
  })

  test('timeout ends the command with TimeoutError', async () => {
    const h = await sbx.commands.run('sleep 30', { background: true, timeoutMs: 1000 })
    await assert.rejects(h.wait(), TimeoutError)
    await waitFor(async () => !(await sbx.commands.list()).some((x) => x.pid === h.pid), {
      what: 'timed-out process to be killed',
    })
  })
})

describe('pty', () => {
  test('create, input, stty size, resize, kill', async () => {
    let buf = ''
    const dec = new TextDecoder()
    const h = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => (buf += dec.decode(d, { stream: true })), timeoutMs: 30_000 })
    const enc = new TextEncoder()
    await sbx.pty.sendInput(h.pid, enc.encode('stty size\n'))
    await waitFor(() => /24 80/.test(buf), { what: `"24 80" in ${JSON.stringify(buf)}` })
    await sbx.pty.resize(h.pid, { cols: 120, rows: 33 })
    await sbx.pty.sendInput(h.pid, enc.encode('stty size\n'))
    await waitFor(() => /33 120/.test(buf), { what: `"33 120" in ${JSON.stringify(buf)}` })
    assert.equal(await sbx.pty.kill(h.pid), true)
    await assert.rejects(h.wait(), CommandExitError)
  })

  test('exit from the shell ends the handle cleanly', async () => {
    const h = await sbx.pty.create({ cols: 80, rows: 24, onData: () => {}, timeoutMs: 30_000 })
    await sbx.pty.sendInput(h.pid, new TextEncoder().encode('exit 0\n'))
    const r = await h.wait()
    assert.equal(r.exitCode, 0)
  })
})
