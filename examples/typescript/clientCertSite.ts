// ClientCertSite of the iis-clientcert component package, for TypeScript programs: the
// schema's types (schema/iis-clientcert.json) written out, and the remote component class.
// (`pulumi package add` cannot generate it with the Node.js language host the set-up builds;
// tests/unit/test_component_package.py keeps these names equal to the schema's.)
import * as pulumi from "@pulumi/pulumi";

/** How to reach the host's WinRM (WS-Management) endpoint. */
export interface Connection {
    endpoint: pulumi.Input<string>;
    transport?: pulumi.Input<string>;
    username?: pulumi.Input<string>;
    /** Secret. */
    password?: pulumi.Input<string>;
    clientCertPem?: pulumi.Input<string>;
    /** Secret. */
    clientKeyPem?: pulumi.Input<string>;
    caBundle?: pulumi.Input<string>;
    verifyTls?: pulumi.Input<boolean>;
    connectTimeout?: pulumi.Input<number>;
    operationTimeout?: pulumi.Input<number>;
    readTimeout?: pulumi.Input<number>;
}

/** The site's https binding, and the server certificate it presents. */
export interface HttpsEndpoint {
    /** Secret. Base64 text of the PFX, or the absolute path of the file. */
    pfx: pulumi.Input<string>;
    /** Secret. */
    password?: pulumi.Input<string>;
    port?: pulumi.Input<number>;
    ip?: pulumi.Input<string>;
    hostName?: pulumi.Input<string>;
    sni?: pulumi.Input<boolean>;
    clientCertNegotiation?: pulumi.Input<boolean>;
}

/** A folder the account may read. */
export interface FolderAccess {
    path: pulumi.Input<string>;
    rights?: pulumi.Input<string>;
}

/** A local account of the host that client certificates log on as. */
export interface SiteUser {
    name: pulumi.Input<string>;
    /** Secret. */
    password: pulumi.Input<string>;
    fullName?: pulumi.Input<string>;
    description?: pulumi.Input<string>;
    groups?: pulumi.Input<pulumi.Input<string>[]>;
    folderAccess?: pulumi.Input<pulumi.Input<FolderAccess>[]>;
    passwordNeverExpires?: pulumi.Input<boolean>;
    userCannotChangePassword?: pulumi.Input<boolean>;
    disabled?: pulumi.Input<boolean>;
}

/** One client certificate that logs on as one account. */
export interface OneToOne {
    certificate: pulumi.Input<string>;
    user: pulumi.Input<string>;
    enabled?: pulumi.Input<boolean>;
}

/** One condition of a many-to-one mapping. */
export interface Rule {
    subField: pulumi.Input<string>;
    match: pulumi.Input<string>;
    field?: pulumi.Input<string>;
    caseSensitive?: pulumi.Input<boolean>;
}

/** Certificates matching all rules log on as one account (Allow), or are refused (Deny). */
export interface ManyToOne {
    name: pulumi.Input<string>;
    rules: Rule[];
    user?: pulumi.Input<string>;
    permission?: pulumi.Input<string>;
    description?: pulumi.Input<string>;
    enabled?: pulumi.Input<boolean>;
}

/** The inputs of a ClientCertSite (the lists are written in the program; entries may be Outputs). */
export interface ClientCertSiteArgs {
    connection: pulumi.Input<Connection>;
    site: pulumi.Input<string>;
    https?: HttpsEndpoint;
    trustedRoots?: pulumi.Input<string>[];
    users?: SiteUser[];
    oneToOne?: OneToOne[];
    manyToOne?: ManyToOne[];
    sslFlags?: pulumi.Input<pulumi.Input<string>[]>;
    anonymousEnabled?: pulumi.Input<boolean>;
    allowUntrustedClientCertificates?: pulumi.Input<boolean>;
}

/** One IIS site configured for client-certificate authentication. */
export class ClientCertSite extends pulumi.ComponentResource {
    public readonly hostEndpoint!: pulumi.Output<string>;
    public readonly siteName!: pulumi.Output<string>;
    public readonly httpsUrl!: pulumi.Output<string | undefined>;
    public readonly serverThumbprint!: pulumi.Output<string | undefined>;
    public readonly rootThumbprints!: pulumi.Output<string[]>;
    public readonly mappedUsers!: pulumi.Output<Record<string, string>>;
    public readonly accounts!: pulumi.Output<string[]>;

    constructor(name: string, args: ClientCertSiteArgs, opts?: pulumi.ComponentResourceOptions) {
        // The outputs are listed (undefined) so the engine fills them in.
        const outputs = {
            hostEndpoint: undefined,
            siteName: undefined,
            httpsUrl: undefined,
            serverThumbprint: undefined,
            rootThumbprints: undefined,
            mappedUsers: undefined,
            accounts: undefined,
        };
        super("iis-clientcert:index:ClientCertSite", name, { ...args, ...outputs }, opts, true);
    }
}
