// Jest runs the TypeScript suites under test/ through ts-jest (TypeScript pinned to ~5.9: ts-jest
// does not support TypeScript 7). The native addon is shared by every test file in a worker.
/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  testPathIgnorePatterns: ['/node_modules/', '/dist/', '/bench/'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'test/tsconfig.json' }] },
  testTimeout: 120000,
};
