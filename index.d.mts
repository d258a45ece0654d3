// Types of the ES module entry (index.mjs), which re-exports the CommonJS build.
export * from './dist/index.js';
export { default } from './dist/index.js';
