// Starts a real arbor-envd for the JS suite, in a world of its own: passwd/group given with --etc-dir,
// a home for `user` (uid 1000) and a temporary home for root (the tests run as root on the host).
import { spawn } from 'node:child_process'
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Sandbox } from 'novita-sandbox'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const TOKEN = 'arbor-js-token-7d41'
// What a real control plane reports; unlocks every SDK feature (closeStdin needs >= 0.5.2).
export const ENVD_VERSION = '0.5.7'
const REQUEST_TIMEOUT_MS = 15_000

export function envdBinary() {
  if (process.env.ARBOR_ENVD_BIN) return process.env.ARBOR_ENVD_BIN
  const target = process.env.CARGO_TARGET_DIR ?? join(REPO, 'target')
  return join(target, 'x86_64-unknown-linux-gnu', 'release', 'arbor-envd')
}

export function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer()
    srv.once('error', fail)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => ok(port))
    })
  })
}

function makeWorld() {
  const base = mkdtempSync(join(tmpdir(), 'arbor-envd-js-'))
  chmodSync(base, 0o755)
  const home = join(base, 'home', 'user')
  const rootHome = join(base, 'root')
  mkdirSync(join(base, 'etc'))
  mkdirSync(home, { recursive: true })
  mkdirSync(rootHome, { mode: 0o700 })
  writeFileSync(join(base, 'etc', 'passwd'), `root:x:0:0:root:${rootHome}:/bin/bash\nuser:x:1000:1000::${home}:/bin/bash\n`)
  writeFileSync(join(base, 'etc', 'group'), 'root:x:0:\nuser:x:1000:\n')
  chownSync(home, 1000, 1000)
  return { base, home, rootHome }
}

/** Starts envd on a free loopback port and waits for /health. */
export async function startEnvd({ token } = {}) {
  const bin = envdBinary()
  if (!existsSync(bin)) throw new Error(`${bin} not found: run scripts/setup.sh --no-start first`)
  const world = makeWorld()
  const port = await freePort()
  const args = ['--listen', `127.0.0.1:${port}`, '--etc-dir', join(world.base, 'etc')]
  if (token) args.push('--access-token', token)
  const logPath = join(world.base, 'envd.log')
  const log = openSync(logPath, 'w')
  const proc = spawn(bin, args, { stdio: ['ignore', log, log] })
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 10_000
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`envd exited: ${readFileSync(logPath, 'utf8')}`)
    try {
      const r = await fetch(`${url}/health`)
      if (r.ok) break
    } catch {}
    if (Date.now() > deadline) throw new Error(`envd not healthy: ${readFileSync(logPath, 'utf8')}`)
    await new Promise((r) => setTimeout(r, 20))
  }
  return {
    ...world,
    url,
    proc,
    log: () => readFileSync(logPath, 'utf8'),
    async stop() {
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once('exit', r))
        proc.kill('SIGTERM')
        const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000)
        await exited
        clearTimeout(timer)
      }
      rmSync(world.base, { recursive: true, force: true })
    },
  }
}

/** The sandbox `Sandbox.create()` gives in debug mode: no control plane, envd at `sandboxUrl`. */
export function debugSandbox(envd) {
  return Sandbox.create({ debug: true, sandboxUrl: envd.url, requestTimeoutMs: REQUEST_TIMEOUT_MS })
}

/** A sandbox carrying an envd access token, as after a real create (no control plane here). */
export function tokenSandbox(envd, token) {
  return new Sandbox({
    sandboxId: 'arbor-js-test',
    envdVersion: ENVD_VERSION,
    envdAccessToken: token,
    sandboxUrl: envd.url,
    debug: true,
    requestTimeoutMs: REQUEST_TIMEOUT_MS,
  })
}

let dirCount = 0
/** A fresh directory in user's home, owned by user. */
export function workDir(envd, name) {
  const path = join(envd.home, `${String(dirCount++).padStart(3, '0')}-${name.replace(/[^\w.-]+/g, '_').slice(0, 40)}`)
  mkdirSync(path)
  chownSync(path, 1000, 1000)
  return path
}

export async function waitFor(cond, { timeoutMs = 5000, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await cond()) return
    await new Promise((r) => setTimeout(r, 20))
  }
  if (!(await cond())) throw new Error(`timed out waiting for ${what}`)
}
