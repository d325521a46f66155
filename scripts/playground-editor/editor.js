// The playground's code editor: CodeMirror 6 with Python and shell modes, exposed to the page
// (static/playground/playground.js, plain script) as the one global `PlaygroundEditor`.
import { basicSetup } from "codemirror";
import { EditorView, keymap } from "@codemirror/view";
import { Compartment, EditorState, Prec } from "@codemirror/state";
import { python } from "@codemirror/lang-python";
import { StreamLanguage } from "@codemirror/language";
import { shell } from "@codemirror/legacy-modes/mode/shell";

function modeFor(language) {
  if (language && language.startsWith("python")) return python();
  if (language === "bash" || language === "sh") return StreamLanguage.define(shell);
  return [];
}

// The page's style sheet does not reach into the shadow root: the editor's size and font.
const layout = EditorView.theme({
  "&": { minHeight: "22rem", maxHeight: "70vh", fontSize: "0.9rem" },
  "&.cm-focused": { outline: "2px solid #b2c7f0" },
  ".cm-scroller": {
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
    overflow: "auto",
  },
  ".cm-content, .cm-gutter": { minHeight: "22rem" },
});

// host: the element to fill; onRun: called on Ctrl-Enter (Cmd-Enter on a Mac).
//
// The editor lives in a shadow root of `host`: there CodeMirror gives its styles to the
// document as constructed style sheets, where in the document itself it would add a <style>
// element, which the page's Content-Security-Policy (style-src 'self') refuses.
export function create(host, { doc = "", language = "python", onRun = () => {} } = {}) {
  const root = host.attachShadow({ mode: "open" });
  const mode = new Compartment();
  const run = () => {
    onRun();
    return true;
  };
  const view = new EditorView({
    root,
    parent: root,
    state: EditorState.create({
      doc,
      extensions: [
        // Above basicSetup's keymap, whose Mod-Enter would insert a blank line.
        Prec.highest(keymap.of([{ key: "Mod-Enter", run }])),
        basicSetup,
        layout,
        mode.of(modeFor(language)),
        EditorView.lineWrapping,
      ],
    }),
  });
  return {
    view,
    getCode: () => view.state.doc.toString(),
    setCode: (code) =>
      view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: code } }),
    setLanguage: (name) => view.dispatch({ effects: mode.reconfigure(modeFor(name)) }),
    focus: () => view.focus(),
  };
}
