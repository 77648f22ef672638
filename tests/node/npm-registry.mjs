// A real npm registry for the npm plugin's tests: Verdaccio (6.8.0, in
// this folder's node_modules) holding every package of
// tests/npm/package-lock.json at its locked version, the tarballs as the
// public registry publishes them (`npm pack name@version`).
//
//   node npm-registry.mjs fill <dir>     publish them into <dir>/storage
//                                        (scripts/setup.sh does, once per lock)
//   node npm-registry.mjs config <dir>   write <dir>/config.yaml: Verdaccio
//                                        serving <dir>/storage, no uplinks
//
// The tests start `verdaccio --config <dir>/config.yaml --listen
// 127.0.0.1:<port>` on a copy of the folder.
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const [mode, dirArg] = process.argv.slice(2);
if (!['fill', 'config'].includes(mode) || !dirArg) {
  console.error('usage: node npm-registry.mjs fill|config <dir>');
  process.exit(2);
}
const dir = resolve(dirArg);
mkdirSync(join(dir, 'storage'), { recursive: true });

function writeConfig() {
  // No uplinks: the registry serves what it holds and nothing else.
  writeFileSync(join(dir, 'config.yaml'), `storage: ${join(dir, 'storage')}
auth:
  htpasswd:
    file: ${join(dir, 'htpasswd')}
    max_users: 10
uplinks: {}
packages:
  '@*/*':
    access: $all
    publish: $authenticated
  '**':
    access: $all
    publish: $authenticated
web:
  enable: false
max_body_size: 200mb
log: { type: stdout, format: pretty, level: warn }
`);
}

/** Every package the lock installs, as [name, version]. */
function lockedPackages() {
  const lock = JSON.parse(readFileSync(join(here, '..', 'npm', 'package-lock.json'), 'utf8'));
  const seen = new Map();
  for (const [path, entry] of Object.entries(lock.packages)) {
    if (!path.includes('node_modules/')) continue;
    const name = entry.name ?? path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length);
    seen.set(`${name}@${entry.version}`, [name, entry.version]);
  }
  return [...seen.values()];
}

/** The tarball of name@version, packed by npm from the public registry. */
function tarball(name, version) {
  const cache = join(dir, 'tarballs');
  mkdirSync(cache, { recursive: true });
  const file = `${name.replace('@', '').replace('/', '-')}-${version}.tgz`;
  if (!existsSync(join(cache, file))) {
    execFileSync('npm', ['pack', `${name}@${version}`, '--pack-destination', cache, '--silent'], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
  }
  return readFileSync(join(cache, file));
}

function manifestOf(bytes) {
  const tmp = join(dir, 'unpack.tgz');
  writeFileSync(tmp, bytes);
  const entries = execFileSync('tar', ['-tzf', tmp], { encoding: 'utf8' }).split('\n');
  const entry = entries.find((e) => /^[^/]+\/package\.json$/.test(e));
  const manifest = JSON.parse(execFileSync('tar', ['-xzOf', tmp, entry], { encoding: 'utf8' }));
  rmSync(tmp);
  return manifest;
}

const freePort = () => new Promise((ok) => {
  const server = createServer().listen(0, '127.0.0.1', () => {
    const { port } = server.address();
    server.close(() => ok(port));
  });
});

async function fill() {
  writeConfig();
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const bin = join(here, 'node_modules', 'verdaccio', 'bin', 'verdaccio');
  const server = spawn(process.execPath, [bin, '--config', join(dir, 'config.yaml'), '--listen', `127.0.0.1:${port}`], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  try {
    let token;
    for (let i = 0; i < 100 && !token; i++) {
      try {
        const resp = await fetch(`${base}/-/user/org.couchdb.user:spike`, {
          method: 'PUT',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ name: 'spike', password: 'spike-tests' }),
        });
        token = (await resp.json()).token;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    if (!token) throw new Error('Verdaccio did not start');
    const packages = lockedPackages();
    for (const [name, version] of packages) {
      const bytes = tarball(name, version);
      const manifest = manifestOf(bytes);
      const file = `${name}-${version}.tgz`;
      manifest._id = `${name}@${version}`;
      manifest.dist = {
        integrity: `sha512-${createHash('sha512').update(bytes).digest('base64')}`,
        shasum: createHash('sha1').update(bytes).digest('hex'),
        tarball: `${base}/${name}/-/${file}`,
      };
      const resp = await fetch(`${base}/${name.replace('/', '%2f')}`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({
          _id: name,
          name,
          'dist-tags': { latest: version },
          versions: { [version]: manifest },
          _attachments: { [file]: { content_type: 'application/octet-stream', data: bytes.toString('base64'), length: bytes.length } },
        }),
      });
      if (!resp.ok && resp.status !== 409) {
        throw new Error(`publishing ${name}@${version}: ${resp.status} ${await resp.text()}`);
      }
    }
    console.log(`npm-registry: ${packages.length} packages in ${join(dir, 'storage')}`);
  } finally {
    server.kill();
  }
}

if (mode === 'config') writeConfig();
else await fill();
