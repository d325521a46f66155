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

// parent: the element to fill; onRun: called on Ctrl-Enter (Cmd-Enter on a Mac).
export function create(parent, { doc = "", language = "python", onRun = () => {} } = {}) {
  const mode = new Compartment();
  const run = () => {
    onRun();
    return true;
  };
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc,
      extensions: [
        // Above basicSetup's keymap, whose Mod-Enter would insert a blank line.
        Prec.highest(keymap.of([{ key: "Mod-Enter", run }])),
        basicSetup,
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
