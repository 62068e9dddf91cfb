// Starts a real `arbor server` for the JS suite, with host resources of its own (instance name, veth
// prefix, address pool), the machine's base template, and a teardown that leaves the host as before.
import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, rmdirSync, rmSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { envdBinary, freePort } from './harness.mjs'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
const INSTANCE = 'arbortestjs'
// Random per test run, as strong as a generated key: a fixed key in a repository is a known key.
const KEY = 'arbor_js_test_' + randomBytes(32).toString('hex')
// Lifecycle flags every harness server gets, at the server's own defaults; a suite passes others to
// startServer (e.g. { 'min-idle-timeout': 2 }).
const DEFAULT_FLAGS = { 'min-idle-timeout': 60, 'paused-retention': 30 * 24 * 3600 }

function arborBinary() {
  if (process.env.ARBOR_BIN) return process.env.ARBOR_BIN
  return join(process.env.CARGO_TARGET_DIR ?? join(REPO, 'target'), 'release', 'arbor')
}

export async function startServer(flags = {}) {
  const bin = arborBinary()
  if (!existsSync(bin)) throw new Error(`${bin} not found: run scripts/setup.sh --no-start first`)
  const base = mkdtempSync(join(tmpdir(), 'arbor-server-js-'))
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const args = ['server', '--listen', `127.0.0.1:${port}`, '--data-dir', join(base, 'data'),
    '--templates-dir', process.env.ARBOR_DATA_DIR ?? '/var/lib/arbor', '--api-key', KEY,
    '--instance', INSTANCE, '--veth-prefix', 'tsj', '--network-pool', '10.203.0.0/16', '--envd-bin', envdBinary()]
  for (const [name, value] of Object.entries({ ...DEFAULT_FLAGS, ...flags })) args.push(`--${name}`, String(value))
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  const ready = new Promise((ok, fail) => {
    const onData = (d) => {
      output += d
      if (output.includes('serving at')) ok()
    }
    proc.stdout.on('data', onData)
    proc.stderr.on('data', (d) => { output += d })
    proc.once('exit', (code) => fail(new Error(`arbor server exited (${code}):\n${output}`)))
  })
  const timer = setTimeout(() => proc.kill('SIGKILL'), 60_000)
  await ready
  clearTimeout(timer)
  const headers = { 'X-API-KEY': KEY }
  return {
    url,
    key: KEY,
    async teardown() {
      try {
        const res = await fetch(`${url}/v2/sandboxes?state=running,paused&limit=1000`, { headers })
        for (const s of res.ok ? await res.json() : []) {
          await fetch(`${url}/sandboxes/${s.sandboxID}`, { method: 'DELETE', headers })
        }
      } catch {}
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once('exit', r))
        proc.kill('SIGTERM')
        await exited
      }
      spawnSync('nft', ['delete', 'table', 'inet', INSTANCE])
      spawnSync('umount', ['-l', join(base, 'data', 'sandboxes')])
      for (const c of readdirSync('/sys/fs/cgroup')) {
        for (const dir of [join('/sys/fs/cgroup', c, INSTANCE), join('/sys/fs/cgroup', INSTANCE)]) {
          try { rmdirSync(dir) } catch {}
        }
      }
      rmSync(`/run/${INSTANCE}`, { recursive: true, force: true })
      rmSync(base, { recursive: true, force: true })
    },
  }
}
