// A V8 startup snapshot of the target's own TypeScript with its library files parsed and bound, built
// with `node --snapshot-blob OUT --build-snapshot tsc_snapshot.js` inside a sandbox (no network, no
// secret). A check then starts as `node --snapshot-blob OUT -- <tsc arguments>` and skips loading the
// compiler and parsing lib.dom.d.ts & co.: about a third of the CPU of `tsc --noEmit` on one file.
//
// Environment: AGENTSWARM_TS = the absolute path of node_modules/typescript/lib/typescript.js (its
// real path: the one the checks will load); AGENTSWARM_TSCONFIG = a tsconfig.json whose options and
// files pick what to warm (optional).
//
// The cache is keyed by file name, by the options that affect parsing and binding (TypeScript's own
// list, sourceFileAffectingCompilerOptions), and is used only when the file's text at check time is
// the text that was parsed: a cached file is the same object the compiler would have made. Only files
// under node_modules are kept (never the project's own sources), and the check is TypeScript's own
// code path for `tsc [--noEmit] [-p X]` (parseConfigFileWithSystem, createProgram,
// emitFilesAndReportErrorsAndGetExitStatus); any other command line (--build, --watch, incremental,
// --showConfig, --help, ...) goes to ts.executeCommandLine unchanged.
'use strict';
const v8 = require('v8');
const fs = require('fs');
const path = require('path');

const tsPath = process.env.AGENTSWARM_TS;
const mod = { exports: {} };
// The snapshot builder may only require built-in modules: evaluate the compiler's CommonJS bundle here.
new Function('module', 'exports', 'require', '__filename', '__dirname', fs.readFileSync(tsPath, 'utf8'))(
  mod, mod.exports, require, tsPath, path.dirname(tsPath));
const ts = mod.exports;

const WARM_ROOT = '/__agentswarm_warm__.ts';
const cache = new Map(); // file key -> {options key, source file}

function optionsKey(options) {
  return ts.sourceFileAffectingCompilerOptions.map((o) => String(JSON.stringify(options[o.name]))).join('|');
}

function fileKey(fileName, languageVersionOrOptions) {
  const o = typeof languageVersionOrOptions === 'object' ? languageVersionOrOptions
    : { languageVersion: languageVersionOrOptions };
  return `${fileName}|${o.languageVersion}|${o.impliedNodeFormat}|${o.jsDocParsingMode}`;
}

function isDependency(fileName) {
  return fileName.includes('/node_modules/');
}

function warm(configPath) {
  const parsed = ts.getParsedCommandLineOfConfigFile(configPath, {},
    { ...ts.sys, onUnRecoverableConfigFileDiagnostic() {} });
  if (!parsed) return 0;
  const options = parsed.options;
  const host = ts.createCompilerHost(options);
  host.jsDocParsingMode = 2; // ParseForTypeErrors, as tsc
  const fileExists = host.fileExists, readFile = host.readFile, getSourceFile = host.getSourceFile;
  host.fileExists = (f) => f === WARM_ROOT || fileExists.call(host, f);
  host.readFile = (f) => (f === WARM_ROOT ? 'export {};\n' : readFile.call(host, f));
  const seen = [];
  host.getSourceFile = (fileName, languageVersionOrOptions, onError, shouldCreate) => {
    const file = getSourceFile.call(host, fileName, languageVersionOrOptions, onError, shouldCreate);
    if (file && isDependency(fileName)) seen.push([fileKey(fileName, languageVersionOrOptions), file]);
    return file;
  };
  // The project's files are roots only so that the dependencies they import get warmed too.
  const program = ts.createProgram({ rootNames: [WARM_ROOT, ...parsed.fileNames], options, host });
  program.getTypeChecker(); // binds every file
  const key = optionsKey(options);
  for (const [k, file] of seen) cache.set(k, { key, file });
  return cache.size;
}

function cachingHost(host, options) {
  const key = optionsKey(options);
  const getSourceFile = host.getSourceFile;
  host.getSourceFile = (fileName, languageVersionOrOptions, onError, shouldCreate) => {
    const hit = cache.get(fileKey(fileName, languageVersionOrOptions));
    if (hit && hit.key === key && !shouldCreate && host.readFile(fileName) === hit.file.text) return hit.file;
    return getSourceFile.call(host, fileName, languageVersionOrOptions, onError, shouldCreate);
  };
  return host;
}

const SPECIAL = ['locale', 'init', 'version', 'help', 'all', 'watch', 'showConfig', 'listFilesOnly', 'build',
  'generateCpuProfile', 'diagnostics', 'extendedDiagnostics', 'generateTrace', 'listFiles', 'explainFiles',
  'traceResolution', 'listEmittedFiles'];

function configFileOf(commandLine, sys) {
  if (commandLine.errors.length || commandLine.fileNames.length) return undefined;
  if (SPECIAL.some((name) => commandLine.options[name])) return undefined;
  if (commandLine.options.project === undefined) {
    return ts.findConfigFile(ts.normalizePath(sys.getCurrentDirectory()), (f) => sys.fileExists(f));
  }
  const p = ts.normalizePath(commandLine.options.project);
  const file = !p || sys.directoryExists(p) ? ts.combinePaths(p, 'tsconfig.json') : p;
  return sys.fileExists(file) ? file : undefined; // a missing one: tsc's own message
}

function main() {
  const args = process.argv.slice(1);
  const sys = ts.sys;
  sys.getCurrentDirectory = () => process.cwd(); // the builder's directory was memoized
  sys.args = args;
  const commandLine = ts.isBuildCommand(args) ? undefined : ts.parseCommandLine(args, (p) => sys.readFile(p));
  const configFile = commandLine && configFileOf(commandLine, sys);
  if (!configFile) return ts.executeCommandLine(sys, () => {}, args);
  const cwd = sys.getCurrentDirectory();
  const commandLineOptions = ts.convertToOptionsWithAbsolutePaths(commandLine.options,
    (f) => ts.getNormalizedAbsolutePath(f, cwd));
  let report = ts.createDiagnosticReporter(sys);
  const config = ts.parseConfigFileWithSystem(configFile, commandLineOptions, new Map(), commandLine.watchOptions,
    sys, report);
  if (!config) return ts.executeCommandLine(sys, () => {}, args);
  const options = config.options;
  if (ts.isIncrementalCompilation(options) || SPECIAL.some((name) => options[name])) {
    return ts.executeCommandLine(sys, () => {}, args);
  }
  const pretty = options.pretty === undefined
    ? !!(sys.writeOutputIsTTY && sys.writeOutputIsTTY() && !sys.getEnvironmentVariable('NO_COLOR'))
    : options.pretty;
  if (pretty) report = ts.createDiagnosticReporter(sys, true);
  const host = cachingHost(ts.createCompilerHost(options), options);
  host.jsDocParsingMode = 2;
  const canonical = ts.createGetCanonicalFileName(host.useCaseSensitiveFileNames());
  ts.changeCompilerHostLikeToUseCache(host, (f) => ts.toPath(f, host.getCurrentDirectory(), canonical));
  const program = ts.createProgram({
    rootNames: config.fileNames, options, projectReferences: config.projectReferences, host,
    configFileParsingDiagnostics: ts.getConfigFileParsingDiagnostics(config),
  });
  const status = ts.emitFilesAndReportErrorsAndGetExitStatus(program, report, (s) => sys.write(s + sys.newLine),
    pretty ? (count, files) => sys.write(ts.getErrorSummaryText(count, files, sys.newLine, sys)) : undefined);
  return sys.exit(status);
}

const warmed = process.env.AGENTSWARM_TSCONFIG ? warm(process.env.AGENTSWARM_TSCONFIG) : 0;
process.stdout.write(JSON.stringify({ typescript: ts.version, warmed }) + '\n');
v8.startupSnapshot.setDeserializeMainFunction(main);
