// dist/ is embedded in the xpod binary (node/src/http/dashboard.rs) under fixed names, and
// served at /-/dashboard/ (relative URLs: base './').
import { defineConfig } from 'vite';

export default defineConfig({
  base: './',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsDir: '',
    modulePreload: false,
    rollupOptions: {
      // Two pages: the dashboard (app.*) and a terminal (terminal.*, with xterm.js).
      input: { app: 'index.html', terminal: 'terminal.html' },
      output: {
        entryFileNames: '[name].js',
        chunkFileNames: 'app-[name].js',
        assetFileNames: '[name].[ext]',
      },
    },
  },
});
