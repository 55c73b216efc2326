// Every user-visible string of the dashboard, in one place: English (default) and French.
// The language comes from `?lang=en|fr` when given, else from navigator.language.
// `t(key, vars)` formats `{name}` placeholders; unknown keys fall back to English, then the key.

export const STRINGS = {
  en: {
    appName: 'mc-hub',
    loading: 'Loading…',
    // document titles
    pageTitle: {
      login: 'mc-hub · Sign in',
      modules: 'mc-hub · Modules',
      admin: 'mc-hub · Admin',
    },
    // login
    loginTitle: 'Sign in',
    loginSubtitle: 'Telemetry hub for field modules',
    emailLabel: 'Email',
    passwordLabel: 'Password',
    loginButton: 'Sign in',
    loginBusy: 'Signing in…',
    loginFailed: 'Wrong email or password.',
    loginMissing: 'Enter your email and password.',
    loginThrottled: 'Too many failed attempts. Try again in {seconds} s.',
    sessionEnded: 'Your session ended. Please sign in again.',
    // errors
    networkError: 'Cannot reach the hub. Try again.',
    serverError: 'The hub answered with an error (HTTP {status}).',
    /** By the `code` of the hub's `{"error": {"code", "message"}}` (and api.js's `network`). */
    errorCode: {
      network: 'Cannot reach the hub. Try again.',
      bad_request: 'The hub refused the request as invalid.',
      unauthorized: 'Your session ended. Please sign in again.',
      forbidden: 'You are not allowed to do this.',
      not_found: 'It no longer exists.',
      conflict: 'It conflicts with the current state (e.g. the id is already taken).',
      unavailable: 'The hub is temporarily unavailable. Try again.',
      timeout: 'The hub did not answer in time. Try again.',
      too_many_attempts: 'Too many attempts. Try again later.',
      internal: 'The hub failed to do it (internal error).',
    },
    // chrome
    navModules: 'Modules',
    navAdmin: 'Admin',
    logoutButton: 'Log out',
    admin: 'admin',
    connecting: 'connecting',
    connected: 'live',
    reconnecting: 'reconnecting',
    failed: 'offline',
    stopped: 'stopped',
    syncing: 'syncing',
    reconnectNow: 'Reconnect now',
    copy: 'Copy',
    copied: 'Copied',
    cancel: 'Cancel',
    save: 'Save',
    close: 'Close',
    // modules page
    modulesTitle: 'Modules',
    summary: '{total} modules · {online} online',
    summaryOne: '1 module · {online} online',
    summaryFiltered: '{shown} of {total} shown',
    searchPlaceholder: 'Search name, id or type',
    filterAll: 'All',
    filterOnline: 'Online',
    filterOffline: 'Offline',
    addModule: 'Add module',
    addModuleTitle: 'Register a module',
    moduleIdLabel: 'Module id',
    moduleIdHint: 'e.g. MC-1001-STN',
    moduleNameLabel: 'Name',
    moduleTypeLabel: 'Type',
    moduleTypeHint: 'station',
    moduleOwnerLabel: 'Owner',
    register: 'Register',
    registering: 'Registering…',
    passwordOnceTitle: 'MQTT password for {id}',
    passwordOnceHint: 'Shown only now: copy it into the module. It cannot be shown again.',
    noModules: 'No modules yet. Register one with “Add module”.',
    noMatch: 'No module matches.',
    loadFailed: 'Could not load modules. Retrying…',
    searchLabel: 'Search modules',
    filterLabel: 'Show',
    syncedChanges: 'Back online: {n} modules changed while the connection was down ({details}).',
    syncedChangesOne: 'Back online: 1 module changed while the connection was down ({details}).',
    syncAdded: '{n} added',
    syncRemoved: '{n} removed',
    syncCameOnline: '{n} came online',
    syncWentOffline: '{n} went offline',
    syncReadings: '{n} with new readings',
    syncRenamed: '{n} renamed',
    online: 'online',
    offline: 'offline',
    offlineReason: {
      timeout: 'timed out',
      will: 'lost (last will)',
      disconnect: 'disconnected',
      connection_lost: 'connection lost',
    },
    lastSeen: 'last seen {ago}',
    neverSeen: 'never seen',
    justNow: 'just now',
    secondsAgo: '{n} s ago',
    minutesAgo: '{n} min ago',
    hoursAgo: '{n} h ago',
    daysAgo: '{n} d ago',
    noReadings: 'no readings yet',
    staleHint: 'last known values (module offline)',
    firmware: 'fw {fw}',
    rename: 'Rename',
    remove: 'Remove',
    confirmRemove: 'Remove {name}?',
    confirmRemoveButton: 'Remove',
    removed: '{name} removed',
    renameFailed: 'Rename failed: {message}',
    removeFailed: 'Remove failed: {message}',
    createFailed: '{message}',
    readingLabels: {
      temperature: 'Temperature',
      humidity: 'Humidity',
      pressure: 'Pressure',
      battery: 'Battery',
      rssi: 'Signal',
    },
    // admin page
    adminTitle: 'Administration',
    statsTitle: 'Hub',
    stat: {
      totalUsers: 'Users',
      activeUsers: 'Active users',
      totalModules: 'Modules',
      onlineModules: 'Online modules',
      connectedClients: 'Dashboards connected',
      messagesPerSecond: 'Messages/s',
      eventsPerSecond: 'Events/s',
      rejectedTotal: 'Rejected',
    },
    chartsTitle: 'Last 5 minutes',
    healthTitle: 'Realtime health',
    health: {
      connectedClients: 'Connected clients',
      eventsPerSecond: 'Events per second',
      avgReconnectMs: 'Average reconnection',
      connectionErrors: 'Connection errors',
      reconnections: 'Reconnections',
    },
    notAvailable: 'n/a',
    usersTitle: 'Users',
    usersSummary: '{total} · {online} online',
    userOption: '{name} <{email}>',
    userNumber: '#{id}',
    userOnline: 'online',
    userOffline: 'offline',
    userDisabled: 'disabled',
    noUsers: 'No users.',
    notificationsTitle: 'Activity',
    noNotifications: 'Nothing yet.',
    userLoggedIn: '{name} signed in',
    userLoggedOut: '{name} signed out',
    pendingTitle: 'Unclaimed modules',
    pendingHint: 'Unregistered modules that tried to connect. Claim one to register it.',
    noPending: 'No unclaimed modules.',
    pendingAttempts: '{n} attempts',
    pendingLast: 'last {ago} from {address}',
    claim: 'Claim',
    claimTitle: 'Claim {id}',
    dismiss: 'Dismiss',
    claimFailed: 'Claim failed: {message}',
    dismissFailed: 'Dismiss failed: {message}',
  },
  fr: {
    appName: 'mc-hub',
    loading: 'Chargement…',
    pageTitle: {
      login: 'mc-hub · Connexion',
      modules: 'mc-hub · Modules',
      admin: 'mc-hub · Administration',
    },
    loginTitle: 'Connexion',
    loginSubtitle: 'Hub de télémesure pour modules de terrain',
    emailLabel: 'E-mail',
    passwordLabel: 'Mot de passe',
    loginButton: 'Se connecter',
    loginBusy: 'Connexion…',
    loginFailed: 'E-mail ou mot de passe incorrect.',
    loginMissing: 'Saisissez votre e-mail et votre mot de passe.',
    loginThrottled: 'Trop de tentatives. Réessayez dans {seconds} s.',
    sessionEnded: 'Votre session a pris fin. Reconnectez-vous.',
    networkError: 'Le hub est injoignable. Réessayez.',
    serverError: 'Le hub a répondu par une erreur (HTTP {status}).',
    errorCode: {
      network: 'Le hub est injoignable. Réessayez.',
      bad_request: 'Le hub a refusé la requête comme invalide.',
      unauthorized: 'Votre session a pris fin. Reconnectez-vous.',
      forbidden: 'Vous n’avez pas le droit de faire ceci.',
      not_found: 'Cela n’existe plus.',
      conflict: 'Conflit avec l’état actuel (par ex. identifiant déjà pris).',
      unavailable: 'Le hub est momentanément indisponible. Réessayez.',
      timeout: 'Le hub n’a pas répondu à temps. Réessayez.',
      too_many_attempts: 'Trop de tentatives. Réessayez plus tard.',
      internal: 'Le hub n’a pas pu le faire (erreur interne).',
    },
    navModules: 'Modules',
    navAdmin: 'Admin',
    logoutButton: 'Déconnexion',
    admin: 'admin',
    connecting: 'connexion',
    connected: 'en direct',
    reconnecting: 'reconnexion',
    failed: 'hors ligne',
    stopped: 'arrêté',
    syncing: 'synchronisation',
    reconnectNow: 'Se reconnecter',
    copy: 'Copier',
    copied: 'Copié',
    cancel: 'Annuler',
    save: 'Enregistrer',
    close: 'Fermer',
    modulesTitle: 'Modules',
    summary: '{total} modules · {online} en ligne',
    summaryOne: '1 module · {online} en ligne',
    summaryFiltered: '{shown} sur {total} affichés',
    searchPlaceholder: 'Chercher nom, id ou type',
    filterAll: 'Tous',
    filterOnline: 'En ligne',
    filterOffline: 'Hors ligne',
    addModule: 'Ajouter un module',
    addModuleTitle: 'Enregistrer un module',
    moduleIdLabel: 'Identifiant',
    moduleIdHint: 'ex. MC-1001-STN',
    moduleNameLabel: 'Nom',
    moduleTypeLabel: 'Type',
    moduleTypeHint: 'station',
    moduleOwnerLabel: 'Propriétaire',
    register: 'Enregistrer',
    registering: 'Enregistrement…',
    passwordOnceTitle: 'Mot de passe MQTT de {id}',
    passwordOnceHint: 'Affiché une seule fois : copiez-le dans le module.',
    noModules: 'Aucun module. Ajoutez-en un avec « Ajouter un module ».',
    noMatch: 'Aucun module ne correspond.',
    loadFailed: 'Impossible de charger les modules. Nouvel essai…',
    searchLabel: 'Rechercher des modules',
    filterLabel: 'Afficher',
    syncedChanges: 'Connexion rétablie : {n} modules ont changé pendant la coupure ({details}).',
    syncedChangesOne: 'Connexion rétablie : 1 module a changé pendant la coupure ({details}).',
    syncAdded: '{n} ajouté(s)',
    syncRemoved: '{n} supprimé(s)',
    syncCameOnline: '{n} en ligne',
    syncWentOffline: '{n} hors ligne',
    syncReadings: '{n} avec de nouvelles mesures',
    syncRenamed: '{n} renommé(s)',
    online: 'en ligne',
    offline: 'hors ligne',
    offlineReason: {
      timeout: 'délai dépassé',
      will: 'perdu (dernière volonté)',
      disconnect: 'déconnecté',
      connection_lost: 'connexion perdue',
    },
    lastSeen: 'vu {ago}',
    neverSeen: 'jamais vu',
    justNow: 'à l’instant',
    secondsAgo: 'il y a {n} s',
    minutesAgo: 'il y a {n} min',
    hoursAgo: 'il y a {n} h',
    daysAgo: 'il y a {n} j',
    noReadings: 'pas encore de mesures',
    staleHint: 'dernières valeurs connues (module hors ligne)',
    firmware: 'fw {fw}',
    rename: 'Renommer',
    remove: 'Supprimer',
    confirmRemove: 'Supprimer {name} ?',
    confirmRemoveButton: 'Supprimer',
    removed: '{name} supprimé',
    renameFailed: 'Échec du renommage : {message}',
    removeFailed: 'Échec de la suppression : {message}',
    createFailed: '{message}',
    readingLabels: {
      temperature: 'Température',
      humidity: 'Humidité',
      pressure: 'Pression',
      battery: 'Batterie',
      rssi: 'Signal',
    },
    adminTitle: 'Administration',
    statsTitle: 'Hub',
    stat: {
      totalUsers: 'Utilisateurs',
      activeUsers: 'Utilisateurs actifs',
      totalModules: 'Modules',
      onlineModules: 'Modules en ligne',
      connectedClients: 'Tableaux de bord connectés',
      messagesPerSecond: 'Messages/s',
      eventsPerSecond: 'Événements/s',
      rejectedTotal: 'Rejetés',
    },
    chartsTitle: '5 dernières minutes',
    healthTitle: 'Santé du temps réel',
    health: {
      connectedClients: 'Clients connectés',
      eventsPerSecond: 'Événements par seconde',
      avgReconnectMs: 'Reconnexion moyenne',
      connectionErrors: 'Erreurs de connexion',
      reconnections: 'Reconnexions',
    },
    notAvailable: 'n/d',
    usersTitle: 'Utilisateurs',
    usersSummary: '{total} · {online} en ligne',
    userOption: '{name} <{email}>',
    userNumber: 'n° {id}',
    userOnline: 'en ligne',
    userOffline: 'hors ligne',
    userDisabled: 'désactivé',
    noUsers: 'Aucun utilisateur.',
    notificationsTitle: 'Activité',
    noNotifications: 'Rien pour l’instant.',
    userLoggedIn: '{name} s\'est connecté',
    userLoggedOut: '{name} s\'est déconnecté',
    pendingTitle: 'Modules non réclamés',
    pendingHint: 'Modules inconnus qui ont tenté de se connecter. Réclamez-en un pour l’enregistrer.',
    noPending: 'Aucun module en attente.',
    pendingAttempts: '{n} tentatives',
    pendingLast: 'dernière {ago} depuis {address}',
    claim: 'Réclamer',
    claimTitle: 'Réclamer {id}',
    dismiss: 'Ignorer',
    claimFailed: 'Échec de la réclamation : {message}',
    dismissFailed: 'Échec : {message}',
  },
};

export const LANGUAGES = Object.keys(STRINGS);

/** The language to use: `?lang=` if supported, else the first supported of the browser's, else English. */
export function pickLanguage(search = '', languages = []) {
  const params = new URLSearchParams(search || '');
  const wanted = [params.get('lang'), ...languages];
  for (const tag of wanted) {
    if (!tag) continue;
    const base = String(tag).toLowerCase().split(/[-_]/)[0];
    if (LANGUAGES.includes(base)) return base;
  }
  return 'en';
}

function browserLanguage() {
  const loc = typeof location !== 'undefined' ? location.search : '';
  const nav = typeof navigator !== 'undefined' ? navigator.languages || [navigator.language] : [];
  return pickLanguage(loc, nav);
}

let current = browserLanguage();

/** The active language code ('en' | 'fr'). */
export function language() {
  return current;
}

/** Switches the language (tests; the pages pick it once at load). */
export function setLanguage(lang) {
  current = LANGUAGES.includes(lang) ? lang : 'en';
}

function lookup(table, path) {
  let node = table;
  for (const part of path) {
    if (node === null || typeof node !== 'object' || !(part in node)) return undefined;
    node = node[part];
  }
  return node;
}

/** Replaces `{name}` with `vars.name`; unknown placeholders stay as they are. */
export function format(template, vars = {}) {
  return String(template).replace(/\{(\w+)\}/g, (m, key) => (key in vars ? String(vars[key]) : m));
}

/** The string `key` ('a.b' for nested tables) in the active language, formatted with `vars`. */
export function t(key, vars) {
  const path = String(key).split('.');
  let value = lookup(STRINGS[current], path);
  if (value === undefined) value = lookup(STRINGS.en, path);
  if (value === undefined) return String(key);
  return typeof value === 'string' ? format(value, vars) : value;
}

/**
 * The text to show for a failed API call: the string of its known `code` (an ApiError of
 * api.js: the hub's `{"error": {"code"}}`, or `network`), `serverError` for another HTTP
 * status, else the error's own message.
 */
export function errorMessage(err) {
  const code = err && typeof err === 'object' ? err.code : undefined;
  if (typeof code === 'string' && /^\w+$/.test(code)) {
    const known = lookup(STRINGS[current], ['errorCode', code]) ?? lookup(STRINGS.en, ['errorCode', code]);
    if (typeof known === 'string') return known;
  }
  const status = err && typeof err === 'object' && Number.isInteger(err.status) ? err.status : 0;
  if (status >= 400 && (!err.message || (typeof code === 'string' && code.startsWith('http_')))) {
    return t('serverError', { status });
  }
  if (err && typeof err === 'object' && err.message) return String(err.message);
  return String(err ?? '');
}

/** A time of day in the page's language (e.g. notification times). */
export function formatTime(date) {
  try {
    return date.toLocaleTimeString(current);
  } catch {
    return date.toLocaleTimeString();
  }
}

/** Fills `[data-i18n="key"]` text and `[data-i18n-placeholder]`/`[data-i18n-title]` attributes under `root`. */
export function applyStrings(root) {
  for (const node of root.querySelectorAll('[data-i18n]')) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll('[data-i18n-placeholder]')) {
    node.setAttribute('placeholder', t(node.dataset.i18nPlaceholder));
  }
  for (const node of root.querySelectorAll('[data-i18n-title]')) node.setAttribute('title', t(node.dataset.i18nTitle));
  if (root.documentElement) root.documentElement.lang = current;
  // <html data-page-title="admin">: the document title in the page's language
  const titleKey = root.documentElement?.dataset?.pageTitle;
  if (titleKey && 'title' in root) {
    const title = t(`pageTitle.${titleKey}`);
    if (typeof title === 'string' && title !== `pageTitle.${titleKey}`) root.title = title;
  }
}
