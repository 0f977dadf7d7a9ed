// The nginx reference for bench/run: one nginx (worker_processes auto) with four servers:
//   static   127.0.0.1:<static>      the same bytes latch answers for a cached token read
//   upstream <upAddr>:443 (TLS)      NinjaOne-shaped JSON, the upstream of latch's proxy AND of
//                                    nginx's proxy_pass (test CA, app.ninjarmm.com certificate)
//   proxy    127.0.0.1:<proxy>       proxy_pass https://<upAddr> (keepalive, verified TLS)
//   slow     127.0.0.1:<slow>        proxy_pass https://<slowAddr> (the 200 ms node upstream)
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

/* cpu: null = worker_processes auto on every CPU; else one worker pinned to that CPU. */
export async function startNginx({ dir, tls, staticPort, proxyPort, slowPort, upAddr, slowAddr, token, cpu = null }) {
  fs.mkdirSync(path.join(dir, 'www', 'v2'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'tmp'), { recursive: true });
  const conf = `
${cpu === null ? 'worker_processes auto;' : 'worker_processes 1;'}
worker_rlimit_nofile 16384;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
daemon off;
user root;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  default_type application/json;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  sendfile on;
  tcp_nodelay on;
  server_tokens off;
  upstream bench_up { server ${upAddr}:443; keepalive 256; }
  upstream bench_slow { server ${slowAddr}:443; keepalive 1024; }
  server {
    listen 127.0.0.1:${staticPort};
    root ${dir}/www;
  }
  server {
    listen ${upAddr}:443 ssl;
    ssl_certificate ${tls}/server.pem;
    ssl_certificate_key ${tls}/server.key;
    root ${dir}/www;
  }
  server {
    listen 127.0.0.1:${proxyPort};
    location / {
      proxy_pass https://bench_up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host app.ninjarmm.com;
      proxy_set_header Authorization "Bearer ${token}";
      proxy_ssl_server_name on;
      proxy_ssl_name app.ninjarmm.com;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate ${tls}/ca.pem;
      proxy_ssl_session_reuse on;
      proxy_buffering on;
    }
  }
  server {
    listen 127.0.0.1:${slowPort} backlog=4096;
    location / {
      proxy_pass https://bench_slow;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host us2.ninjarmm.com;
      proxy_set_header Authorization "Bearer ${token}";
      proxy_ssl_server_name on;
      proxy_ssl_name us2.ninjarmm.com;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate ${tls}/ca.pem;
      proxy_ssl_session_reuse on;
    }
  }
}
`;
  const confPath = path.join(dir, 'nginx.conf');
  fs.writeFileSync(confPath, conf);
  const log = fs.openSync(path.join(dir, 'nginx.out'), 'a');
  const argv = ['-p', dir, '-e', path.join(dir, 'error.log'), '-c', confPath];
  // pinned: taskset execs nginx, whose master and worker inherit the one-CPU mask
  const child = cpu === null ? spawn('nginx', argv, { stdio: ['ignore', log, log] })
    : spawn('taskset', ['-c', String(cpu), 'nginx', ...argv], { stdio: ['ignore', log, log] });
  const deadline = Date.now() + 10000;
  for (;;) {
    const up = await new Promise((res) => {
      const s = net.connect(staticPort, '127.0.0.1', () => { s.destroy(); res(true); });
      s.on('error', () => res(false));
    });
    if (up) break;
    if (child.exitCode !== null || Date.now() > deadline) {
      throw new Error(`nginx did not start:\n${fs.readFileSync(path.join(dir, 'error.log'), 'utf8')}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    child,
    www: path.join(dir, 'www'),
    async stop() {
      if (child.exitCode !== null) return;
      const done = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM'); // fast shutdown: don't wait for idle keep-alive clients
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await done;
      clearTimeout(t);
    },
  };
}
