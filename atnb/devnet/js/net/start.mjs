// The atnb devnet: PLC, reference PDS, Bluesky AppView (via @atproto/dev-env),
// a front in front of the PDS, and a control endpoint, all on 127.0.0.1.
//
// Reads one JSON object from the ATNB_DEVNET_CONFIG environment variable,
// prints one JSON line {"ready": true, ...} when every service answers, and
// shuts down cleanly on SIGTERM or SIGINT.
import http from 'node:http'
import net from 'node:net'
import crypto from 'node:crypto'
import { spawnSync } from 'node:child_process'

const config = JSON.parse(process.env.ATNB_DEVNET_CONFIG || '{}')
const LOOPBACK = '127.0.0.1'

// --- Loopback guards -------------------------------------------------------
// Every dev-env service listens with a port only; bind those to loopback.
const originalListen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\d+$/.test(args[0]))) {
    const port = Number(args[0])
    const rest = args.slice(1).filter((a) => typeof a === 'function')
    return originalListen.call(this, port, LOOPBACK, ...rest)
  }
  if (args[0] && typeof args[0] === 'object' && args[0].port !== undefined) {
    args[0] = { ...args[0], host: LOOPBACK }
  }
  return originalListen.apply(this, args)
}

const isLoopback = (host) =>
  !host ||
  host === 'localhost' ||
  host === '::1' ||
  host === '[::1]' ||
  /^127\./.test(host) ||
  host.endsWith('.test')

// Refuse (and log) any outbound connection to a host that is not loopback.
const originalConnect = net.Socket.prototype.connect
net.Socket.prototype.connect = function (...args) {
  const opts = args[0] && typeof args[0] === 'object' ? args[0] : { host: args[1] }
  const host = opts.path ? 'localhost' : opts.host
  if (!isLoopback(host)) {
    console.error(`[devnet] refused outbound connection to ${host}`)
    process.nextTick(() => this.destroy(new Error(`devnet: outbound to ${host} refused`)))
    return this
  }
  return originalConnect.apply(this, args)
}

// --- The network -----------------------------------------------------------
const { PDS } = await import('@atproto/pds')
const devEnv = await import('@atproto/dev-env')

const frontUrl = `http://localhost:${config.frontPort}`
const originalCreate = PDS.create
PDS.create = async function (cfg, secrets, ...rest) {
  // Only the main PDS is advertised through the front (its DID documents and
  // didDoc name the front), so clients that follow them pass through it.
  if (cfg.service.port === config.pdsPort) {
    cfg.service.publicUrl = frontUrl
  }
  return originalCreate.call(this, cfg, secrets, ...rest)
}

const pdsOptions = {
  port: config.pdsPort,
  jwtSecret: config.jwtSecret,
  adminPassword: config.adminPassword,
  inviteRequired: false,
  serviceHandleDomains: ['.test'],
  enableDidDocWithSession: config.didDocWithSession !== false,
}
if (config.smtpUrl) {
  pdsOptions.emailSmtpUrl = config.smtpUrl
  pdsOptions.emailFromAddress = 'devnet@atnb.test'
}
if (config.rateLimits) {
  pdsOptions.rateLimitsEnabled = true
}

const network = await devEnv.TestNetwork.create({
  dbPostgresUrl: config.postgresUrl,
  dbPostgresSchema: config.schema,
  plc: { port: config.plcPort },
  pds: pdsOptions,
  bsky: { port: config.bskyPort, publicUrl: `http://localhost:${config.bskyPort}` },
  ozone: { port: config.ozonePort },
})

// dev-env rewrites the PDS's own view of DID documents to its direct port;
// undo that for the PDS so that didDoc in sessions names the front, as the
// PLC directory does. The AppView keeps the rewrite and reads the PDS directly.
delete network.pds.ctx.idResolver.did.resolveNoCache

// --- The front -------------------------------------------------------------
const pdsAgent = new http.Agent({ keepAlive: true, maxSockets: 64 })
const counts = new Map()
let faults = []
let twoFactor = Boolean(config.twoFactor)
let rejectRotated = false
const spentRefresh = new Set()
const pendingCodes = new Map() // did -> { code, expires }
// The PDS accepts emailAuthFactor in updateEmail but does not keep it; the
// front keeps it, and reports it in session responses as hosted servers do.
const factorOn = new Set()
const SESSION_VIEWS = new Set([
  'com.atproto.server.createSession',
  'com.atproto.server.getSession',
  'com.atproto.server.refreshSession',
])

const nsidOf = (url) => {
  const m = /^\/xrpc\/([^?/]+)/.exec(url || '')
  return m ? m[1] : null
}

const readBody = (req) =>
  new Promise((resolve, reject) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => resolve(Buffer.concat(chunks)))
    req.on('error', reject)
  })

const sendJson = (res, status, body, headers = {}) => {
  const data = Buffer.from(JSON.stringify(body))
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': data.length,
    ...headers,
  })
  res.end(data)
}

// Forward one request to the PDS; resolve with {status, headers, body} when
// buffer is true, otherwise stream the answer to res.
const forward = (req, res, body, { buffer = false } = {}) =>
  new Promise((resolve, reject) => {
    const headers = { ...req.headers }
    if (body !== undefined) headers['content-length'] = String(body.length)
    // Answers the front reads must arrive uncompressed.
    if (buffer) delete headers['accept-encoding']
    const upstream = http.request(
      {
        host: LOOPBACK,
        port: config.pdsPort,
        method: req.method,
        path: req.url,
        headers,
        agent: pdsAgent,
      },
      (up) => {
        if (!buffer) {
          res.writeHead(up.statusCode, up.headers)
          up.pipe(res)
          up.on('end', () => resolve(null))
          up.on('error', reject)
          return
        }
        const chunks = []
        up.on('data', (c) => chunks.push(c))
        up.on('end', () =>
          resolve({ status: up.statusCode, headers: up.headers, body: Buffer.concat(chunks) }),
        )
        up.on('error', reject)
      },
    )
    upstream.on('error', reject)
    if (body !== undefined) upstream.end(body)
    else req.pipe(upstream)
  })

const relay = (res, answer) => {
  res.writeHead(answer.status, answer.headers)
  res.end(answer.body)
}

const takeFault = (nsid) => {
  const i = faults.findIndex((f) => f.nsid === nsid || f.nsid === '*')
  if (i < 0) return null
  const fault = faults[i]
  fault.times -= 1
  if (fault.times <= 0) faults.splice(i, 1)
  return fault
}

const applyFault = async (fault, req, res) => {
  switch (fault.kind) {
    case 'drop':
      req.socket.destroy()
      return true
    case 'delay':
      await new Promise((r) => setTimeout(r, fault.delay_ms ?? 1000))
      return false
    case 'html': {
      const status = fault.status ?? 502
      const page = `<html><head><title>${status} Bad Gateway</title></head><body><h1>${status}</h1><p>upstream failed</p></body></html>`
      res.writeHead(status, { 'content-type': 'text/html', 'content-length': Buffer.byteLength(page) })
      res.end(page)
      return true
    }
    case 'error':
      sendJson(res, fault.status ?? 400, { error: fault.error ?? 'InvalidRequest', message: fault.message ?? 'injected by the devnet front' })
      return true
    case 'replay': {
      // The first hit is answered by the PDS and recorded; later hits get
      // the very same answer (a list whose cursor never advances).
      if (!fault.recorded) fault.recorded = await forward(req, res, undefined, { buffer: true })
      relay(res, fault.recorded)
      return true
    }
    case 'ratelimit': {
      const reset = Math.floor(Date.now() / 1000) + (fault.reset_in ?? 30)
      sendJson(res, 429, { error: 'RateLimitExceeded', message: 'Rate Limit Exceeded' }, {
        'ratelimit-limit': String(fault.limit ?? 100),
        'ratelimit-remaining': '0',
        'ratelimit-reset': String(fault.reset ?? reset),
        'ratelimit-policy': `${fault.limit ?? 100};w=${fault.window ?? 300}`,
      })
      return true
    }
    default:
      return false
  }
}

const newCode = () => {
  const alphabet = 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789'
  const pick = () => Array.from(crypto.randomBytes(5), (b) => alphabet[b % alphabet.length]).join('')
  return `${pick()}-${pick()}`
}

const mailCode = async (to, code) => {
  if (!config.smtpUrl || !to) return
  const nodemailer = (await import('nodemailer')).default
  const transport = nodemailer.createTransport(config.smtpUrl)
  await transport.sendMail({
    from: 'devnet@atnb.test',
    to,
    subject: 'Sign in to Bluesky',
    text: `Your sign in code is ${code}\n\nThis code expires in 10 minutes.`,
  })
}

const claimsOf = (jwt) => {
  try {
    return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString())
  } catch {
    return {}
  }
}
const scopeOf = (jwt) => claimsOf(jwt).scope
const bearer = (req) => {
  const auth = req.headers.authorization || ''
  return auth.startsWith('Bearer ') ? auth.slice(7) : ''
}

// Add emailAuthFactor to a session answer for accounts that turned it on.
const withFactor = (answer) => {
  if (answer.status !== 200) return answer
  let view
  try {
    view = JSON.parse(answer.body.toString())
  } catch {
    return answer
  }
  if (!factorOn.has(view.did)) return answer
  view.emailAuthFactor = true
  const body = Buffer.from(JSON.stringify(view))
  return { ...answer, body, headers: { ...answer.headers, 'content-length': String(body.length) } }
}

const trackUpdateEmail = async (req, res, body) => {
  let input = {}
  try {
    input = JSON.parse(body.toString() || '{}')
  } catch {}
  const answer = await forward(req, res, body, { buffer: true })
  const did = claimsOf(bearer(req)).sub
  if (answer.status === 200 && did && typeof input.emailAuthFactor === 'boolean') {
    if (input.emailAuthFactor) factorOn.add(did)
    else factorOn.delete(did)
  }
  relay(res, answer)
}

// The 2FA gate: a stand-in for the hosted entryway's email sign-in codes,
// which the open-source PDS does not implement.
const gateCreateSession = async (req, res, body) => {
  let input = {}
  try {
    input = JSON.parse(body.toString() || '{}')
  } catch {}
  const answer = withFactor(await forward(req, res, body, { buffer: true }))
  if (answer.status !== 200) return relay(res, answer)
  const session = JSON.parse(answer.body.toString())
  const mainPassword = scopeOf(session.accessJwt) === 'com.atproto.access'
  if (!(twoFactor && session.emailAuthFactor && session.emailConfirmed && mainPassword)) {
    return relay(res, answer)
  }
  const pending = pendingCodes.get(session.did)
  const given = typeof input.authFactorToken === 'string' ? input.authFactorToken.trim().toUpperCase() : ''
  if (given && pending && pending.expires > Date.now() && given === pending.code) {
    pendingCodes.delete(session.did)
    return relay(res, answer)
  }
  // Not (or wrongly) answered: drop the session the PDS just made.
  await fetch(`http://${LOOPBACK}:${config.pdsPort}/xrpc/com.atproto.server.deleteSession`, {
    method: 'POST',
    headers: { authorization: `Bearer ${session.refreshJwt}` },
  })
  if (!given || !pending || pending.expires <= Date.now()) {
    const code = newCode()
    pendingCodes.set(session.did, { code, expires: Date.now() + 10 * 60 * 1000 })
    await mailCode(session.email, code)
  }
  sendJson(res, 401, {
    error: 'AuthFactorTokenRequired',
    message: given
      ? 'Invalid sign in code. Check your email for the latest code.'
      : 'A sign in code has been sent to your email address',
  })
}

const gateRefreshSession = async (req, res, body) => {
  const jwt = bearer(req)
  if (rejectRotated && spentRefresh.has(jwt)) {
    return sendJson(res, 400, { error: 'ExpiredToken', message: 'Token has been revoked' })
  }
  const answer = withFactor(await forward(req, res, body, { buffer: true }))
  if (answer.status === 200 && jwt) spentRefresh.add(jwt)
  relay(res, answer)
}

const front = http.createServer(async (req, res) => {
  const nsid = nsidOf(req.url)
  const key = nsid || req.url.split('?')[0]
  counts.set(key, (counts.get(key) || 0) + 1)
  try {
    const fault = takeFault(key)
    if (fault && (await applyFault(fault, req, res))) return
    if (nsid === 'com.atproto.server.createSession') {
      return await gateCreateSession(req, res, await readBody(req))
    }
    if (nsid === 'com.atproto.server.refreshSession') {
      return await gateRefreshSession(req, res, await readBody(req))
    }
    if (nsid === 'com.atproto.server.getSession' && factorOn.size > 0) {
      return relay(res, withFactor(await forward(req, res, undefined, { buffer: true })))
    }
    if (nsid === 'com.atproto.server.updateEmail') {
      return await trackUpdateEmail(req, res, await readBody(req))
    }
    await forward(req, res)
  } catch (err) {
    if (!res.headersSent) {
      sendJson(res, 502, { error: 'UpstreamFailure', message: `devnet front: ${err.message}` })
    } else {
      res.destroy()
    }
  }
})
front.keepAliveTimeout = 30000
await new Promise((r) => front.listen(config.frontPort, LOOPBACK, r))

// --- Control endpoint ------------------------------------------------------
const control = http.createServer(async (req, res) => {
  try {
    const body = req.method === 'POST' ? JSON.parse((await readBody(req)).toString() || '{}') : {}
    const path = req.url.split('?')[0]
    if (path === '/counts') return sendJson(res, 200, Object.fromEntries(counts))
    if (path === '/reset') {
      counts.clear()
      faults = []
      spentRefresh.clear()
      rejectRotated = false
      if (body.twoFactor !== undefined) twoFactor = Boolean(body.twoFactor)
      return sendJson(res, 200, { ok: true })
    }
    if (path === '/fault') {
      faults.push({ times: 1, ...body })
      return sendJson(res, 200, { ok: true, pending: faults.length })
    }
    if (path === '/settings') {
      if (body.twoFactor !== undefined) twoFactor = Boolean(body.twoFactor)
      if (body.rejectRotated !== undefined) rejectRotated = Boolean(body.rejectRotated)
      return sendJson(res, 200, { twoFactor, rejectRotated })
    }
    if (path === '/process') {
      await network.processAll(body.timeout_ms ?? 30000)
      return sendJson(res, 200, { ok: true })
    }
    sendJson(res, 404, { error: 'NotFound' })
  } catch (err) {
    sendJson(res, 500, { error: 'ControlError', message: String(err && err.message) })
  }
})
await new Promise((r) => control.listen(config.controlPort, LOOPBACK, r))

let closing = false
const shutdown = async () => {
  if (closing) return
  closing = true
  front.close()
  control.close()
  pdsAgent.destroy()
  try {
    await network.close()
  } catch (err) {
    console.error(`[devnet] close: ${err && err.message}`)
  }
  process.exit(0)
}
process.on('SIGTERM', shutdown)
// If the Python process that started us dies without stopping us, stop
// ourselves and our PostgreSQL cluster: nothing is left running.
if (config.watchPid) {
  setInterval(() => {
    try {
      process.kill(config.watchPid, 0)
    } catch {
      if (config.orphanCommand) {
        spawnSync(config.orphanCommand[0], config.orphanCommand.slice(1), { stdio: 'ignore' })
      }
      shutdown()
    }
  }, 1000).unref()
}
process.on('SIGINT', shutdown)

console.log(
  JSON.stringify({
    ready: true,
    pid: process.pid,
    pds_url: frontUrl,
    pds_direct_url: network.pds.url,
    plc_url: network.plc.url,
    appview_url: network.bsky.url,
    appview_did: network.bsky.ctx.cfg.serverDid,
    pds_did: network.pds.ctx.cfg.service.did,
    control_url: `http://${LOOPBACK}:${config.controlPort}`,
  }),
)
