// Entra ID On-Behalf-Of test authorization server for the end-to-end tests.
//
// oauth2-mock-server issues and signs the tokens (its own jwt-bearer and
// password grants); this script puts Entra's token endpoint path in front of
// it and answers every OBO request that Entra would refuse the way Entra does:
// an AADSTS error body with trace fields, and the step-up and consent answers
// for a few special users.
//
// The gateway's app may authenticate with its secret, with a certificate
// credential (a client assertion it signs, naming the certificate by its
// x5t#S256) or with a federated identity credential (a client assertion issued
// by a trusted issuer, such as a Kubernetes service-account token). Client
// assertions are verified as Entra does, with the JOSE library `jose`: the
// signature against the registered certificate or the issuer's published keys,
// then aud, iss and sub, and the validity times.
//
// Environment: ENTRA_TENANT (default contoso), ENTRA_CLIENT_ID and
// ENTRA_CLIENT_SECRET (the middle-tier app, that is the gateway);
// ENTRA_CLIENT_CERTS, a PEM file of the certificates uploaded to the app;
// ENTRA_FEDERATED_CREDENTIALS, a JSON list of the app's federated identity
// credentials, each {"issuer", "subject", "audiences": [...]}.
// ENTRA_STDIN_CONTROL=1 makes stdin a control channel from the parent process:
// a line "sync N" is echoed as {"event":"sync","n":N}, and end of input stops
// the server, so it never outlives a test binary that was killed.
//
// Stdout carries one JSON line per event: "ready" once listening, then one
// "token" line per token-endpoint request. Tokens and secrets are never printed.

import { createServer } from 'node:http';
import { createHash, createPublicKey, randomUUID, verify, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { OAuth2Issuer, OAuth2Service } from 'oauth2-mock-server';
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, errors as joseErrors, importX509, jwtVerify } from 'jose';

const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
// Entra accepts a few minutes of clock skew on client assertions.
const CLOCK_SKEW = 300;
// Entra verifies certificate credentials signed with RSA only.
const CERTIFICATE_ALGORITHMS = ['RS256', 'PS256'];
const TOKEN_LIFETIME = 3600;
// Conditional Access policy id named in the step-up claims challenge.
const MFA_POLICY_ID = '3d6c2a8e-5f0b-4c1e-9a7d-2b4f6e8c1a90';
// Scopes Entra accepts next to a resource's scopes; they name no resource.
const OIDC_SCOPES = new Set(['openid', 'profile', 'email', 'offline_access']);

const config = readConfig();
const tokenPath = `/${config.tenant}/oauth2/v2.0/token`;

const issuer = new OAuth2Issuer();
await issuer.keys.generate('RS256');
const service = new OAuth2Service(issuer, {
  token: tokenPath,
  jwks: `/${config.tenant}/discovery/v2.0/keys`,
});
service.on('beforeTokenSigning', shapeClaims);
service.on('beforeResponse', shapeResponse);

// OAuth2Server would hand requests straight to the library, whose own parser
// rejects a request without grant_type or assertion before any event hook
// runs, in a shape Entra never uses. So this server checks token requests
// first and gives the library only those Entra would accept.
const server = createServer((req, res) => {
  handle(req, res).catch((err) => {
    process.stderr.write(`entra-mock: ${err.stack ?? err}\n`);
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
  });
});
server.listen(0, '127.0.0.1', () => {
  issuer.url = `http://127.0.0.1:${server.address().port}`;
  print({
    event: 'ready',
    issuer: issuer.url,
    token_endpoint: issuer.url + tokenPath,
    jwks_uri: `${issuer.url}/${config.tenant}/discovery/v2.0/keys`,
  });
});
process.once('SIGTERM', shutdown);
process.once('SIGINT', shutdown);
if (process.env.ENTRA_STDIN_CONTROL === '1') listenToParent();

function readConfig() {
  const tenant = process.env.ENTRA_TENANT || 'contoso';
  const clientId = process.env.ENTRA_CLIENT_ID ?? '';
  const clientSecret = process.env.ENTRA_CLIENT_SECRET ?? '';
  if (!/^[A-Za-z0-9.-]+$/.test(tenant) || !clientId || !clientSecret) {
    process.stderr.write('entra-mock: set ENTRA_CLIENT_ID and ENTRA_CLIENT_SECRET; ENTRA_TENANT must be a plain name\n');
    process.exit(2);
  }
  const certificates = readCertificates(process.env.ENTRA_CLIENT_CERTS);
  const federated = JSON.parse(process.env.ENTRA_FEDERATED_CREDENTIALS || '[]');
  return { tenant, clientId, clientSecret, certificates, federated };
}

// readCertificates loads the certificates uploaded to the app registration,
// each with the thumbprints a client assertion may name it by.
function readCertificates(path) {
  if (!path) return [];
  const pems = readFileSync(path, 'utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return pems.map((pem) => {
    const der = new X509Certificate(pem).raw;
    return {
      pem,
      x5tS256: createHash('sha256').update(der).digest('base64url'),
      x5t: createHash('sha1').update(der).digest('base64url'),
    };
  });
}

async function handle(req, res) {
  const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname.replace(/(.)\/$/, '$1');
  if (path !== tokenPath || req.method === 'OPTIONS') {
    service.requestHandler(req, res);
    return;
  }
  const raw = await readBody(req);
  const form = parseForm(req, raw);
  const call = { grantType: form.get('grant_type') ?? '', sub: '', error: '', clientAuth: '' };
  logBeforeSending(res, call);

  const refusal = await checkTokenRequest(req, form, call);
  if (refusal) {
    call.error = refusal.body.error;
    sendJson(res, refusal.status, refusal.body);
    return;
  }
  service.requestHandler(replay(req, raw), res);
}

// The "token" line is written just before the response, so it is in the pipe
// before the client can read the answer; the Go starter relies on that order
// to count calls exactly.
function logBeforeSending(res, call) {
  const end = res.end.bind(res);
  res.end = (...args) => {
    const error = call.error || (res.statusCode >= 400 ? 'invalid_request' : '');
    print({ event: 'token', grant_type: call.grantType, status: res.statusCode, error, sub: call.sub, client_auth: call.clientAuth });
    return end(...args);
  };
}

// checkTokenRequest returns Entra's refusal of the request, or null.
async function checkTokenRequest(req, form, call) {
  if (req.method !== 'POST') {
    return entraError(400, 'invalid_request', 900561, `The endpoint only accepts POST requests. Received a ${req.method} request.`);
  }
  for (const name of new Set(form.keys())) {
    if (form.getAll(name).length > 1) {
      return entraError(400, 'invalid_request', 9002313, `Invalid request. Request is malformed or invalid. The parameter '${name}' is duplicated.`);
    }
  }
  const grantType = form.get('grant_type');
  if (!grantType) return missingParameter('grant_type');
  if (grantType === 'password') {
    // Test helper: user tokens for the gateway, to be used as OBO assertions.
    call.sub = form.get('username') ?? '';
    return call.sub ? null : missingParameter('username');
  }
  if (grantType !== JWT_BEARER) {
    return entraError(400, 'unsupported_grant_type', 70003, `The app requested an unsupported grant type '${grantType}'.`);
  }
  return checkOboRequest(req, form, call);
}

// checkOboRequest applies the checks of Microsoft's On-Behalf-Of request, in
// the order: parameters present, client, client credential, parameter values,
// assertion, user.
async function checkOboRequest(req, form, call) {
  const client = clientCredentials(req, form);
  if (!client.id) return missingParameter('client_id');
  if (!client.secret && !client.assertion) {
    return entraError(401, 'invalid_client', 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.");
  }
  for (const name of ['assertion', 'scope', 'requested_token_use']) {
    if (!form.get(name)) return missingParameter(name);
  }

  if (client.id !== config.clientId) {
    return entraError(400, 'unauthorized_client', 700016,
      `Application with identifier '${client.id}' was not found in the directory '${config.tenant}'. ` +
      'This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. ' +
      'You may have sent your authentication request to the wrong tenant.');
  }
  const credential = client.assertion ? await checkClientAssertion(form, client, call) : checkClientSecret(client, call);
  if (credential) return credential;
  if (form.get('requested_token_use') !== 'on_behalf_of') {
    return entraError(400, 'invalid_request', 9002313, "Invalid request. Request is malformed or invalid. 'requested_token_use' must be 'on_behalf_of'.");
  }
  const scope = parseScope(form.get('scope'));
  if (scope.error) {
    return entraError(400, 'invalid_scope', 70011, `The provided value for the input parameter 'scope' is not valid. ${scope.error}`);
  }

  const assertion = checkAssertion(form.get('assertion'));
  if (assertion.refusal) return assertion.refusal;
  call.sub = assertion.claims.sub;
  return specialUserAnswer(assertion.claims, scope.resource);
}

// clientCredentials reads HTTP Basic client authentication, which Entra
// accepts too, or else client_id and client_secret (or client_assertion) from
// the body.
function clientCredentials(req, form) {
  const header = req.headers.authorization ?? '';
  if (/^basic /i.test(header)) {
    const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon > 0) {
      // RFC 6749 section 2.3.1: both halves are form-encoded before base64.
      return { id: formDecode(decoded.slice(0, colon)), secret: formDecode(decoded.slice(colon + 1)) };
    }
  }
  return {
    id: form.get('client_id') ?? '',
    secret: form.get('client_secret') ?? '',
    assertion: form.get('client_assertion') ?? '',
    assertionType: form.get('client_assertion_type') ?? '',
  };
}

function checkClientSecret(client, call) {
  if (client.secret !== config.clientSecret) {
    return entraError(401, 'invalid_client', 7000215,
      `Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${config.clientId}'.`);
  }
  call.clientAuth = 'secret';
  return null;
}

// checkClientAssertion verifies a client assertion as Entra does: one the app
// signed itself (iss = client id) is a certificate credential, any other must
// come from the issuer of one of the app's federated identity credentials.
async function checkClientAssertion(form, client, call) {
  if (client.secret) {
    return entraError(400, 'invalid_request', 9002313, "Invalid request. Request is malformed or invalid. Send either 'client_secret' or 'client_assertion', not both.");
  }
  if (client.assertionType !== CLIENT_ASSERTION_TYPE) {
    return client.assertionType ? entraError(400, 'invalid_request', 9002313,
      `Invalid request. Request is malformed or invalid. 'client_assertion_type' must be '${CLIENT_ASSERTION_TYPE}'.`) : missingParameter('client_assertion_type');
  }
  let header;
  let claims;
  try {
    header = decodeProtectedHeader(client.assertion);
    claims = decodeJwt(client.assertion);
  } catch {
    return entraError(400, 'invalid_request', 50027, 'JWT token is invalid or malformed.');
  }
  const ownAssertion = claims.iss === config.clientId || claims.sub === config.clientId;
  call.clientAuth = ownAssertion ? 'certificate' : 'federated';
  const audiences = [claims.aud].flat().filter((a) => a !== undefined);
  if (audiences.length > 1) {
    return entraError(401, 'invalid_client', 5002741,
      `Number of audience values in the provided client credential exceed maximum allowed. ${audiences.length} audience values provided, maximum allowed is 1.`);
  }
  return ownAssertion ? checkCertificateAssertion(client.assertion, header, claims) : checkFederatedAssertion(client.assertion, claims);
}

// checkCertificateAssertion: the assertion names a certificate uploaded to the
// app by its thumbprint; iss and sub are the app; aud is this token endpoint
// (or the tenant's issuer); the signature verifies with the certificate.
async function checkCertificateAssertion(assertion, header, claims) {
  if (claims.iss !== config.clientId || claims.sub !== config.clientId) {
    return entraError(401, 'invalid_client', 700021,
      "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .");
  }
  const thumbprint = header['x5t#S256'] ?? header.x5t ?? '';
  const certificate = config.certificates.find((c) => (header['x5t#S256'] ? c.x5tS256 === header['x5t#S256'] : c.x5t === header.x5t));
  if (!certificate) {
    return entraError(401, 'invalid_client', 700027,
      `The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '${thumbprint}', ` +
      `Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '${config.clientId}'.]`);
  }
  const accepted = [issuer.url + tokenPath, `${issuer.url}/${config.tenant}/v2.0`];
  if (!accepted.includes(claims.aud)) {
    return entraError(401, 'invalid_client', 700023,
      'Client assertion audience claim does not match Realm issuer. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .');
  }
  if (!CERTIFICATE_ALGORITHMS.includes(header.alg)) {
    return invalidSignature(`The algorithm '${header.alg}' is not supported for certificate credentials.`);
  }
  const key = await importX509(certificate.pem, header.alg);
  return verifyAssertion(assertion, key, { algorithms: CERTIFICATE_ALGORITHMS });
}

// checkFederatedAssertion: a federated identity credential of the app names
// the assertion's issuer, subject and audience; the signature verifies with
// the keys the issuer publishes (its OpenID discovery document's jwks_uri).
async function checkFederatedAssertion(assertion, claims) {
  const docs = 'Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation';
  const byIssuer = config.federated.filter((f) => f.issuer === claims.iss);
  if (byIssuer.length === 0) {
    return entraError(401, 'invalid_client', 700211, `No matching federated identity record found for presented assertion issuer '${claims.iss}'. ${docs}`);
  }
  const bySubject = byIssuer.filter((f) => f.subject === claims.sub);
  if (bySubject.length === 0) {
    return entraError(401, 'invalid_client', 700213, `No matching federated identity record found for presented assertion subject '${claims.sub}'. ${docs}`);
  }
  const audience = [claims.aud].flat()[0];
  const credential = bySubject.find((f) => f.audiences.includes(audience));
  if (!credential) {
    return entraError(401, 'invalid_client', 700212, `No matching federated identity record found for presented assertion audience '${audience}'. ${docs}`);
  }
  let keys;
  try {
    keys = await issuerKeys(credential.issuer);
  } catch (err) {
    return invalidSignature(`The signing keys of issuer '${credential.issuer}' could not be retrieved: ${err.message}`);
  }
  return verifyAssertion(assertion, keys, { issuer: credential.issuer, subject: credential.subject, audience: credential.audiences });
}

const jwksByIssuer = new Map();

// issuerKeys finds an issuer's keys through its OpenID discovery document.
async function issuerKeys(iss) {
  if (!jwksByIssuer.has(iss)) {
    const response = await fetch(`${iss.replace(/\/$/, '')}/.well-known/openid-configuration`);
    if (!response.ok) throw new Error(`discovery answered HTTP ${response.status}`);
    const discovery = await response.json();
    jwksByIssuer.set(iss, createRemoteJWKSet(new URL(discovery.jwks_uri)));
  }
  return jwksByIssuer.get(iss);
}

// verifyAssertion checks the signature and the validity times with jose, and
// maps its failures to Entra's codes.
async function verifyAssertion(assertion, key, options) {
  try {
    await jwtVerify(assertion, key, { ...options, clockTolerance: CLOCK_SKEW, requiredClaims: ['exp'] });
    return null;
  } catch (err) {
    if (err instanceof joseErrors.JWTExpired || (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === 'nbf')) {
      const claims = decodeJwt(assertion);
      return entraError(401, 'invalid_client', 700024,
        `Client assertion is not within its valid time range. Current time: ${isoTime(Date.now() / 1000)}, assertion valid from ${isoTime(claims.nbf ?? claims.iat)}, ` +
        `expiry time of assertion ${isoTime(claims.exp)}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .`);
    }
    if (err instanceof joseErrors.JWSSignatureVerificationFailed || err instanceof joseErrors.JWKSNoMatchingKey) {
      return invalidSignature('The key was found, but use of the key to verify the signature failed.');
    }
    return entraError(400, 'invalid_request', 50027, `JWT token is invalid or malformed. ${err.message}`);
  }
}

function invalidSignature(reason) {
  return entraError(401, 'invalid_client', 700027, `Client assertion contains an invalid signature. [Reason - ${reason}]`);
}

function formDecode(s) {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

// parseScope finds the one resource the scopes are for: 'api://orders/.default'
// is scope '.default' of resource 'api://orders'. Like Entra, a request may
// name only one resource, plus OpenID Connect scopes.
function parseScope(value) {
  const names = [];
  const resources = new Set();
  for (const scope of value.split(' ')) {
    if (!scope || OIDC_SCOPES.has(scope)) continue;
    const slash = scope.lastIndexOf('/');
    if (slash <= 0 || slash === scope.length - 1) {
      return { error: `The scope '${scope}' does not name a resource, as in 'api://orders/.default'.` };
    }
    resources.add(scope.slice(0, slash));
    names.push(scope.slice(slash + 1));
  }
  if (resources.size !== 1) {
    return { error: resources.size === 0 ? 'No resource scope was requested.' : 'The scopes name more than one resource.' };
  }
  return { resource: [...resources][0], names };
}

// checkAssertion verifies the user's token: signed by this server's key (RS256),
// issued for the gateway, not expired. It returns { claims } or { refusal }.
function checkAssertion(assertion) {
  const parts = assertion.split('.');
  const header = parts.length === 3 ? decodeJson(parts[0]) : null;
  const claims = parts.length === 3 ? decodeJson(parts[1]) : null;
  if (!header || !claims || typeof claims.sub !== 'string') {
    return { refusal: entraError(400, 'invalid_request', 50027, 'JWT token is invalid or malformed.') };
  }

  const jwk = issuer.keys.toJSON().find((key) => key.kid === header.kid);
  if (!jwk || header.alg !== 'RS256') {
    return { refusal: signatureRefusal('The key was not found.') };
  }
  const signed = Buffer.from(`${parts[0]}.${parts[1]}`);
  const signature = Buffer.from(parts[2], 'base64url');
  if (!verify('sha256', signed, createPublicKey({ key: jwk, format: 'jwk' }), signature)) {
    return { refusal: signatureRefusal('Key was found, but use of the key to verify the signature failed.') };
  }

  // Entra accepts the app id or its default App ID URI as the audience.
  const audiences = [claims.aud].flat();
  if (!audiences.includes(config.clientId) && !audiences.includes(`api://${config.clientId}`)) {
    return {
      refusal: entraError(400, 'invalid_grant', 50013,
        `Assertion audience claim does not match the required value. The audience in the assertion was '${audiences.join(',')}' ` +
        `and the expected audience is '${config.clientId}' or one of the Application Uris of this application with App ID '${config.clientId}'.`),
    };
  }
  const now = Math.floor(Date.now() / 1000);
  if (typeof claims.exp !== 'number' || claims.exp <= now) {
    return {
      refusal: entraError(400, 'invalid_grant', 500133,
        'Assertion is not within its valid time range. Ensure that the access token is not expired before using it for user assertion, or request a new token. ' +
        `Current time: ${isoTime(now)}, expiry time of assertion ${isoTime(claims.exp)}.`),
    };
  }
  return { claims };
}

function signatureRefusal(reason) {
  return entraError(400, 'invalid_grant', 50013, `Assertion failed signature validation. [Reason - ${reason}]`);
}

// specialUserAnswer reproduces Entra's step-up, consent and revocation answers
// for the users the tests name by their sub claim.
function specialUserAnswer(claims, resource) {
  switch (claims.sub) {
    case 'mfa-user':
      return entraError(400, 'invalid_grant', 50076,
        'Due to a configuration change made by your administrator, or because you moved to a new location, ' +
        `you must use multi-factor authentication to access '${resource}'.`,
        {
          suberror: 'basic_action',
          claims: JSON.stringify({ access_token: { capolids: { essential: true, values: [MFA_POLICY_ID] } } }),
        });
    case 'consent-user':
      return entraError(400, 'invalid_grant', 65001,
        `The user or administrator has not consented to use the application with ID '${config.clientId}' named 'gateway'. ` +
        'Send an interactive authorization request for this user and resource.',
        { suberror: 'consent_required' });
    case 'revoked-user':
      return entraError(400, 'invalid_grant', 50173,
        'The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password. ' +
        `The grant was issued on '${isoTime(claims.iat)}' and the TokensValidFrom date (before which tokens are not valid) for this user is '${isoTime(Date.now() / 1000)}'.`);
    default:
      return null;
  }
}

function missingParameter(name) {
  return entraError(400, 'invalid_request', 900144, `The request body must contain the following parameter: '${name}'.`);
}

// entraError builds Entra's error answer: the AADSTS code leads the
// description, which ends with the trace fields repeated in the body.
function entraError(status, error, code, message, extra = {}) {
  const traceId = randomUUID();
  const correlationId = randomUUID();
  const timestamp = new Date().toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  return {
    status,
    body: {
      error,
      error_description: `AADSTS${code}: ${message}\r\nTrace ID: ${traceId}\r\nCorrelation ID: ${correlationId}\r\nTimestamp: ${timestamp}`,
      error_codes: [code],
      timestamp,
      trace_id: traceId,
      correlation_id: correlationId,
      error_uri: `https://login.microsoftonline.com/error?code=${code}`,
      ...extra,
    },
  };
}

// shapeClaims turns the library's tokens into Entra v2 access tokens.
function shapeClaims(token, req) {
  const form = req.body;
  const payload = token.payload;
  if (form.grant_type === JWT_BEARER) {
    const user = decodeJson(form.assertion.split('.')[1]);
    const scope = parseScope(form.scope);
    // The library names the assertion's subject as client and copies the
    // scope string; Entra has neither claim.
    delete payload.client_id;
    delete payload.scope;
    Object.assign(payload, {
      aud: scope.resource,
      sub: user.sub,
      oid: user.oid,
      name: user.name,
      scp: scope.names.join(' '),
      azp: config.clientId,
      appid: config.clientId,
      tid: tenantId(),
      ver: '2.0',
    });
  } else if (form.grant_type === 'password') {
    shapeUserToken(payload, form.username);
  }
}

// shapeUserToken makes the user's token for the gateway: a valid OBO assertion.
// The library signs an id_token as well for this grant; only the access token
// carries its 'scope' claim, and only that one gets scp.
function shapeUserToken(payload, username) {
  const isAccessToken = 'scope' in payload;
  delete payload.scope;
  Object.assign(payload, {
    aud: config.clientId,
    sub: username,
    oid: stableUuid(`user:${username}`),
    name: username,
    tid: tenantId(),
    ver: '2.0',
  });
  if (isAccessToken) Object.assign(payload, { scp: 'access_as_user', azp: config.clientId });
  if (username === 'expired-user') {
    // Lets tests present an expired assertion, which only this server can sign.
    payload.iat -= 2 * TOKEN_LIFETIME;
    payload.nbf -= 2 * TOKEN_LIFETIME;
    payload.exp = payload.iat + TOKEN_LIFETIME;
  }
}

function shapeResponse(response) {
  if (response.statusCode === 200) response.body.ext_expires_in = TOKEN_LIFETIME;
}

function tenantId() {
  return stableUuid(`tenant:${config.tenant}`);
}

// stableUuid gives the same id to the same name in every run.
function stableUuid(name) {
  const hex = createHash('sha256').update(name).digest('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

function decodeJson(part) {
  try {
    const value = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? value : null;
  } catch {
    return null;
  }
}

function isoTime(seconds) {
  return typeof seconds === 'number' ? new Date(seconds * 1000).toISOString() : 'unknown';
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

// parseForm reads a form body. Entra ignores a body of any other type, so such
// a request is treated as one without parameters.
function parseForm(req, raw) {
  const type = req.headers['content-type'] ?? '';
  if (!type.toLowerCase().startsWith('application/x-www-form-urlencoded')) return new URLSearchParams();
  return new URLSearchParams(raw.toString('utf8'));
}

// replay gives the library a request whose body can be read again.
function replay(req, raw) {
  return Object.assign(Readable.from([raw]), { method: req.method, url: req.url, headers: req.headers });
}

function sendJson(res, status, body) {
  const content = JSON.stringify(body);
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store, no-cache');
  res.setHeader('Pragma', 'no-cache');
  res.end(content);
}

function print(event) {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

function listenToParent() {
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    const match = /^sync (\d+)$/.exec(line.trim());
    if (match) print({ event: 'sync', n: Number(match[1]) });
  });
  lines.on('close', shutdown);
}

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  // Whatever is still open after a moment is not worth waiting for.
  setTimeout(() => process.exit(0), 2000).unref();
}
