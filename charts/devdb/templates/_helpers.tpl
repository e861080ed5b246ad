{{/* Full name: the release name when it already says devdb, else <release>-devdb. */}}
{{- define "devdb.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The API's --instance: prefix of database object names and their instance label. */}}
{{- define "devdb.dbInstance" -}}
{{- .Release.Name | trunc 30 | trimSuffix "-" -}}
{{- end -}}

{{- define "devdb.labels" -}}
app.kubernetes.io/name: devdb
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: devdb
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of one component: devdb.selector (dict "ctx" . "component" "api") */}}
{{- define "devdb.selector" -}}
app.kubernetes.io/name: devdb
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "devdb.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "devdb.secretsName" -}}{{ include "devdb.fullname" . }}-secrets{{- end -}}
{{- define "devdb.adminTokenSecret" -}}{{ .Values.api.adminTokenSecret | default (include "devdb.secretsName" .) }}{{- end -}}
{{- define "devdb.routerTLSSecret" -}}{{ .Values.router.tls.secretName | default (printf "%s-router-tls" (include "devdb.fullname" .)) }}{{- end -}}
{{- define "devdb.redisURL" -}}redis://{{ include "devdb.fullname" . }}-redis:6379/0{{- end -}}

{{/* Restricted pod security for DevDB's own pods. */}}
{{- define "devdb.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}
{{- define "devdb.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}
