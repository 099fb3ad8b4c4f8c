// The selected block's settings: its label, input values (inputs not wired), resources (cpu,
// cpu_mem, gpu, gpu_mem), timeout; output names for a task whose outputs are only known when it
// runs. The ReAct node's timeout is its one Task Timeout and `max_tokens` its Max Tokens.
import { useEffect, useState, type ChangeEvent } from "react";
import type { GraphProblem } from "../api/builder";
import {
  RESOURCE_KEYS,
  formatInputValue,
  parseInputValue,
  validHandleName,
  type CanvasEdge,
  type NodeData,
} from "./graphModel";

const REACT_LABELS: Record<string, string> = { max_tokens: "Max Tokens", max_steps: "Max Steps", api_key_env: "API key variable" };
const REACT_TOOLS = ["read_file", "write_file", "exec_code"];

interface Props {
  id: string;
  data: NodeData;
  edges: CanvasEdge[];
  problems: GraphProblem[];
  onChange: (patch: Partial<NodeData>) => void;
  onDelete: () => void;
}

export function NodePanel({ id, data, edges, problems, onChange, onDelete }: Props) {
  const { info } = data;
  const react = info.ref === "builtin:react";
  const wiredFrom = new Map(edges.filter((e) => e.target === id).map((e) => [e.targetHandle ?? "", `${e.source}.${e.sourceHandle}`]));
  return (
    <div className="panel node-panel" data-panel={id}>
      <div className="panel-head">
        <h3>{data.label}</h3>
        <span className="kind">{info.kind}</span>
        <div className="spacer" />
        <button className="danger" onClick={onDelete}>Remove</button>
      </div>
      <div className="muted mono small">{id} · {info.ref}</div>
      {info.description ? <p className="muted small">{info.description}</p> : null}
      <label className="field">
        <span>Label</span>
        <input aria-label="label" value={data.label} onChange={(e) => onChange({ label: e.target.value })} />
      </label>
      <h4>Inputs</h4>
      {info.inputs.length === 0 ? <div className="muted small">This task takes no inputs.</div> : null}
      {info.inputs.map((name) =>
        wiredFrom.has(name) ? (
          <div className="field" key={name}>
            <span>{name}</span>
            <span className="muted small">wired from {wiredFrom.get(name)}</span>
          </div>
        ) : react && name === "tools" ? (
          <ToolsField key={name} value={data.inputs.tools as string[] | undefined} onChange={(v) => setInput(name, v)} />
        ) : (
          <InputField
            key={`${id}:${name}`}
            name={name}
            label={(react && REACT_LABELS[name]) || name}
            required={info.required_inputs.includes(name)}
            dataType={info.data_types[name]}
            value={data.inputs[name]}
            placeholder={name in info.defaults ? `default ${JSON.stringify(info.defaults[name])}` : ""}
            multiline={react && name === "prompt"}
            problem={problems.find((p) => p.handle === name)?.message}
            onChange={(v) => setInput(name, v)}
          />
        ),
      )}
      {info.outputs === null ? (
        <OutputsField key={id} value={data.extraOutputs} onChange={(extraOutputs) => onChange({ extraOutputs })} />
      ) : null}
      <h4>Resources</h4>
      <div className="resource-grid">
        {RESOURCE_KEYS.map((key) => (
          <NumberField
            key={`${id}:${key}`}
            label={key === "cpu_mem" || key === "gpu_mem" ? `${key} (MB)` : key}
            value={data.resources[key]}
            placeholder={info.resources[key] !== undefined ? String(info.resources[key]) : ""}
            onChange={(v) => {
              const next = { ...data.resources };
              if (v === undefined) delete next[key];
              else next[key] = v;
              onChange({ resources: next });
            }}
          />
        ))}
      </div>
      <NumberField
        key={`${id}:timeout`}
        label={react ? "Task Timeout (s)" : "Timeout (s)"}
        value={data.timeout ?? undefined}
        placeholder={info.timeout_seconds ? String(info.timeout_seconds) : "none"}
        onChange={(v) => onChange({ timeout: v ?? null })}
      />
      {react ? (
        <p className="muted small">
          The Task Timeout bounds each decision and tool task (Exec Code's default); the run's own timeout is derived from it.
        </p>
      ) : null}
      {problems.filter((p) => !p.handle).map((p, i) => (
        <div className="error-box" key={i}>{p.message}</div>
      ))}
    </div>
  );

  function setInput(name: string, value: unknown | undefined) {
    const next = { ...data.inputs };
    if (value === undefined) delete next[name];
    else next[name] = value;
    onChange({ inputs: next });
  }
}

function InputField(props: {
  name: string;
  label: string;
  required: boolean;
  dataType: string | undefined;
  value: unknown;
  placeholder: string;
  multiline: boolean;
  problem: string | undefined;
  onChange: (value: unknown | undefined) => void;
}) {
  const [text, setText] = useState(formatInputValue(props.value, props.dataType));
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    // a value changed elsewhere (a load): show it, unless this field holds the same value
    const parsed = parseInputValue(text, props.dataType);
    const same = "set" in parsed && (parsed.set ? JSON.stringify(parsed.value) === JSON.stringify(props.value) : props.value === undefined);
    if (!same) setText(formatInputValue(props.value, props.dataType));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [props.value]);
  function change(next: string) {
    setText(next);
    const parsed = parseInputValue(next, props.dataType);
    if ("error" in parsed) {
      setError(parsed.error);
      props.onChange(undefined);
    } else {
      setError(null);
      props.onChange(parsed.set ? parsed.value : undefined);
    }
  }
  const Tag = props.multiline ? "textarea" : "input";
  return (
    <label className={`field${props.problem || error ? " bad" : ""}`}>
      <span>
        {props.label}
        {props.required ? "*" : ""} {props.dataType ? <span className="dt">{props.dataType}</span> : null}
      </span>
      <Tag
        aria-label={`input ${props.name}`}
        value={text}
        placeholder={props.placeholder}
        onChange={(e: ChangeEvent<HTMLInputElement | HTMLTextAreaElement>) => change(e.target.value)}
      />
      {error ? <span className="field-error">{error}</span> : props.problem ? <span className="field-error">{props.problem}</span> : null}
    </label>
  );
}

function NumberField(props: { label: string; value: number | undefined; placeholder: string; onChange: (v: number | undefined) => void }) {
  const [text, setText] = useState(props.value === undefined ? "" : String(props.value));
  const bad = text.trim() !== "" && !Number.isFinite(Number(text));
  return (
    <label className={`field${bad ? " bad" : ""}`}>
      <span>{props.label}</span>
      <input
        aria-label={props.label}
        inputMode="decimal"
        value={text}
        placeholder={props.placeholder}
        onChange={(e) => {
          setText(e.target.value);
          const v = e.target.value.trim();
          if (v === "") props.onChange(undefined);
          else if (Number.isFinite(Number(v))) props.onChange(Number(v));
        }}
      />
      {bad ? <span className="field-error">a number</span> : null}
    </label>
  );
}

function ToolsField({ value, onChange }: { value: string[] | undefined; onChange: (v: string[] | undefined) => void }) {
  const chosen = value ?? REACT_TOOLS;
  return (
    <div className="field">
      <span>Tools</span>
      <div className="checks">
        {REACT_TOOLS.map((t) => (
          <label key={t}>
            <input
              type="checkbox"
              checked={chosen.includes(t)}
              onChange={(e) => {
                const next = e.target.checked ? [...chosen, t] : chosen.filter((x) => x !== t);
                onChange(next.length === REACT_TOOLS.length ? undefined : next);
              }}
            />{" "}
            {t}
          </label>
        ))}
      </div>
    </div>
  );
}

function OutputsField({ value, onChange }: { value: string[]; onChange: (v: string[]) => void }) {
  const [text, setText] = useState(value.join(", "));
  const names = text.split(",").map((s) => s.trim()).filter(Boolean);
  const bad = names.filter((n) => !validHandleName(n));
  return (
    <label className={`field${bad.length ? " bad" : ""}`}>
      <span>Output handles</span>
      <input
        aria-label="outputs"
        value={text}
        placeholder="e.g. result, rows"
        onChange={(e) => {
          setText(e.target.value);
          const next = e.target.value.split(",").map((s) => s.trim()).filter(Boolean);
          if (next.every(validHandleName)) onChange([...new Set(next)]);
        }}
      />
      <span className="muted small">This task's outputs are only known when it runs: name the keys its result dict holds.</span>
      {bad.length ? <span className="field-error">not a name: {bad.join(", ")}</span> : null}
    </label>
  );
}
