{{/* The leader-election Lease: opsync's default --leader-election-id (controllers/constants.py), which the
chart does not override. RBAC grants get and update on this name only. */}}
{{- define "opsync.leaseName" -}}
c26807fd.onepassword.com
{{- end -}}

{{/* The ServiceAccount's user name, as admission sees the requests opsync makes. */}}
{{- define "opsync.serviceAccountUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "opsync.serviceAccountName" . }}
{{- end -}}


{{/*
Where the NetworkPolicy lets opsync reach Connect (issue 16: never "anywhere"): networkPolicy.connectTo as
given; else networkPolicy.connect.cidr; else connect.host's address when it is an IP; else Connect's pods
(networkPolicy.connect.podSelector, the connect chart's `app: onepassword-connect` by default) in
networkPolicy.connect.namespace, else the namespace connect.host names (<service>.<namespace>[.svc...]), else,
for a bare service name, the release's. Any other host name cannot be placed: rendering fails and says what to set.
*/}}
{{- define "opsync.connectPeers" -}}
{{- $np := .np -}}
{{- $connect := $np.connect | default dict -}}
{{- $host := .host -}}
{{- $labels := splitList "." $host -}}
{{- if $np.connectTo -}}
{{- toYaml $np.connectTo -}}
{{- else if $connect.cidr -}}
- ipBlock:
    cidr: {{ $connect.cidr | quote }}
{{- else if regexMatch "^[0-9]+(\\.[0-9]+){3}$" $host -}}
- ipBlock:
    cidr: {{ printf "%s/32" $host | quote }}
{{- else -}}
{{- $namespace := $connect.namespace -}}
{{- if not $namespace -}}
{{- if eq (len $labels) 1 -}}
{{- $namespace = .root.Release.Namespace -}}
{{- else if or (eq (len $labels) 2) (eq (index $labels 2) "svc") -}}
{{- $namespace = index $labels 1 -}}
{{- else -}}
{{- fail (printf "networkPolicy: cannot tell where Connect (%s) runs; set networkPolicy.connect.cidr (outside the cluster), networkPolicy.connect.namespace, or networkPolicy.connectTo" $host) -}}
{{- end -}}
{{- end -}}
- podSelector:
    {{- toYaml ($connect.podSelector | default (dict "matchLabels" (dict "app" "onepassword-connect"))) | nindent 4 }}
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ $namespace | quote }}
{{- end -}}
{{- end -}}
