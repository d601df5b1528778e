#!/usr/bin/env node
// A thin `solc` executable backed by the npm `solc` package (solcjs, WebAssembly), so that
// py-solc-x can drive it offline. It speaks the two things py-solc-x asks of a solc binary:
//   --version                       print the compiler version
//   --standard-json [--base-path P] read Standard JSON input on stdin, write the output
// Imports are resolved against the base path and the project's node_modules
// (e.g. "@openzeppelin/contracts/...").
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const args = process.argv.slice(2);

function optionValue(name) {
  const at = args.indexOf(name);
  return at >= 0 && at + 1 < args.length ? args[at + 1] : null;
}

if (args.includes('--version')) {
  process.stdout.write('solc, the solidity compiler commandline interface\n');
  process.stdout.write(`Version: ${solc.version()}\n`);
  process.exit(0);
}

if (!args.includes('--standard-json')) {
  process.stderr.write('Error: only --version and --standard-json are supported\n');
  process.exit(1);
}

const basePath = optionValue('--base-path') || process.cwd();
const searchRoots = [basePath, path.join(__dirname, '..', '..', 'node_modules')];

function findImports(importPath) {
  for (const root of searchRoots) {
    const candidate = path.resolve(root, importPath);
    if (fs.existsSync(candidate)) {
      return { contents: fs.readFileSync(candidate, 'utf8') };
    }
  }
  return { error: `File not found: ${importPath} (searched ${searchRoots.join(', ')})` };
}

const input = fs.readFileSync(0, 'utf8');
process.stdout.write(solc.compile(input, { import: findImports }));
