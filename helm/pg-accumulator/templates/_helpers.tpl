{{/* Chart name, cut to 63 characters (a label value's limit). */}}
{{- define "pg-accumulator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release + chart name unless the release name already contains it; 63 characters. */}}
{{- define "pg-accumulator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pg-accumulator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: the only labels selectors use (a Deployment's selector is immutable). */}}
{{- define "pg-accumulator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pg-accumulator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "pg-accumulator.labels" -}}
helm.sh/chart: {{ include "pg-accumulator.chart" . }}
{{ include "pg-accumulator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pg-accumulator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "pg-accumulator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pg-accumulator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pg-accumulator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The Secret holding the DSN: yours, or the chart's. */}}
{{- define "pg-accumulator.postgresSecretName" -}}
{{- .Values.postgres.existingSecret | default (include "pg-accumulator.fullname" .) }}
{{- end }}

{{/* The Secret holding the Kafka credentials (librdkafka JSON), or nothing when there are none. */}}
{{- define "pg-accumulator.kafkaSecretName" -}}
{{- if .Values.kafka.existingSecret }}
{{- .Values.kafka.existingSecret }}
{{- else if .Values.kafka.credentials }}
{{- include "pg-accumulator.fullname" . }}
{{- end }}
{{- end }}

{{/* Does the chart create its own Secret? */}}
{{- define "pg-accumulator.createSecret" -}}
{{- if or (not .Values.postgres.existingSecret) (and (not .Values.kafka.existingSecret) .Values.kafka.credentials) }}true{{- end }}
{{- end }}

{{/* Checks the schema cannot express; rendered (empty) by every template that needs them. */}}
{{- define "pg-accumulator.validate" -}}
{{- if not (or .Values.postgres.existingSecret .Values.postgres.dsn) }}
{{- fail "set postgres.existingSecret (a Secret with the DSN; preferred) or postgres.dsn" }}
{{- end }}
{{- if not .Values.kafka.bootstrapServers }}
{{- fail "set kafka.bootstrapServers" }}
{{- end }}
{{- if and .Values.kafka.extra (include "pg-accumulator.kafkaSecretName" .) }}
{{- fail "kafka.extra and Kafka credentials both set ACCUMULATOR_KAFKA_EXTRA: put every librdkafka setting into the credentials object, or use kafka.consumerExtra/producerExtra" }}
{{- end }}
{{- $graceMs := int (index .Values.settings "ACCUMULATOR_SHUTDOWN_GRACE_MS" | default 25000) }}
{{- if le (mul (int .Values.terminationGracePeriodSeconds) 1000) $graceMs }}
{{- fail (printf "terminationGracePeriodSeconds (%v s) must exceed ACCUMULATOR_SHUTDOWN_GRACE_MS (%v ms): Kubernetes would kill a worker finishing its batch" .Values.terminationGracePeriodSeconds $graceMs) }}
{{- end }}
{{- end }}

{{/* Settings as a map of ACCUMULATOR_* variables: the ConfigMap's data, and the migration Job's env. */}}
{{- define "pg-accumulator.settings" -}}
ACCUMULATOR_KAFKA_BOOTSTRAP_SERVERS: {{ .Values.kafka.bootstrapServers | quote }}
ACCUMULATOR_KAFKA_TOPICS: {{ .Values.kafka.topics | quote }}
ACCUMULATOR_KAFKA_GROUP_ID: {{ .Values.kafka.groupId | quote }}
ACCUMULATOR_KAFKA_AUTO_OFFSET_RESET: {{ .Values.kafka.autoOffsetReset | quote }}
{{- with .Values.kafka.dlqTopic }}
ACCUMULATOR_KAFKA_DLQ_TOPIC: {{ . | quote }}
{{- end }}
{{- with .Values.kafka.extra }}
ACCUMULATOR_KAFKA_EXTRA: {{ toJson . | quote }}
{{- end }}
{{- with .Values.kafka.consumerExtra }}
ACCUMULATOR_CONSUMER_EXTRA: {{ toJson . | quote }}
{{- end }}
{{- with .Values.kafka.producerExtra }}
ACCUMULATOR_PRODUCER_EXTRA: {{ toJson . | quote }}
{{- end }}
{{- range $key, $value := .Values.settings }}
{{ $key }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* Environment from Secrets: the DSN, and the Kafka credentials when there are any. */}}
{{- define "pg-accumulator.secretEnv" -}}
- name: ACCUMULATOR_DSN
  valueFrom:
    secretKeyRef:
      name: {{ include "pg-accumulator.postgresSecretName" . }}
      key: {{ if .Values.postgres.existingSecret }}{{ .Values.postgres.secretKey }}{{ else }}dsn{{ end }}
{{- with include "pg-accumulator.kafkaSecretName" . }}
- name: ACCUMULATOR_KAFKA_EXTRA
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ if $.Values.kafka.existingSecret }}{{ $.Values.kafka.secretKey }}{{ else }}kafka-extra{{ end }}
{{- end }}
{{- end }}

{{/* Pod-level fields shared by the Deployment, the migration Job and the test Pod. */}}
{{- define "pg-accumulator.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
