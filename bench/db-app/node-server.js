// node-server.js: the Node.js anchor for bench/db.sh: express + the `pg` pool (max 10).
'use strict';
const express = require('express');
const { Pool } = require('pg');
const pool = new Pool({ connectionString: process.env.DATABASE_URL, max: 10 });
const app = express();
app.set('etag', false);
app.set('x-powered-by', false);
app.get('/account/:aid', async (req, res) => {
  try {
    const r = await pool.query('select aid, abalance from pgbench_accounts where aid = $1', [req.params.aid]);
    if (!r.rows[0]) return res.status(404).json({ error: 'not found' });
    res.json(r.rows[0]);
  } catch (e) {
    res.status(500).json({ error: e.message });
  }
});
app.listen(Number(process.env.PORT || 5092), '127.0.0.1');
