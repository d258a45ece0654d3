// The ES module entry: the CommonJS build re-exported, so that `import` and
// `require` share one instance of the library (one NarcacheError class, one
// loaded native core). The default export is the whole API, as Node gives
// for a CommonJS package.
export * from './dist/index.js';
export { default } from './dist/index.js';
